//! Edge policy of the SBC (placeholder until the policy issue fills it).
