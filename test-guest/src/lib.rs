//! The kvmkit project test guest (being written).
