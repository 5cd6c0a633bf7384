//! Handshake tests (filled below).
