//! Shared set-up for the comparison benches (see `benches/`).
