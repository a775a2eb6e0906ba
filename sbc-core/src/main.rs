//! The `sbc` appliance binary.
fn main() {}
