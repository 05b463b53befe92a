//! The tcp_conn tuner (being written).
