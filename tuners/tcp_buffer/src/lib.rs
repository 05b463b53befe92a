//! The tcp_buffer tuner (being written).
