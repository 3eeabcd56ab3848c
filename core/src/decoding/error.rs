//! Why a window could not be decoded.

use crate::backend::BackendError;

/// Why a window could not be decoded.
#[derive(Debug, Clone, PartialEq)]
pub enum DecodeError {
    /// The backend failed.
    Backend(BackendError),
    /// A language the model has no token for.
    UnknownLanguage(String),
    /// No temperature gave a result (no temperatures, or no sample).
    NothingDecoded,
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::Backend(e) => write!(f, "{e}"),
            DecodeError::UnknownLanguage(code) => write!(f, "the model has no language {code:?}"),
            DecodeError::NothingDecoded => write!(f, "nothing decoded"),
        }
    }
}

impl std::error::Error for DecodeError {}

impl From<BackendError> for DecodeError {
    fn from(e: BackendError) -> Self {
        DecodeError::Backend(e)
    }
}
