//! Media plane of the SBC (placeholder until the media issue fills it).
