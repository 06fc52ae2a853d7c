//! proto (placeholder)
