//! VRRP (being written).
