//! Empty: this crate only holds integration tests (see tests/).
