//! redcore
