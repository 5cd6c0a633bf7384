//! Malformed input (filled below).
