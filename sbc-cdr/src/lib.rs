//! Call records of the SBC (placeholder until the records issue fills it).
