//! Weight arrays that are either owned or a view into a read-only mapping shared with other
//! processes (the model loader's weight cache): the kernels read both as plain slices.

use std::ops::Deref;
use std::sync::Arc;

/// Element types for which every bit pattern is a value, so that any aligned bytes of a mapped
/// file can be read as them.
pub trait Plain: Copy + Send + Sync + 'static + private::Sealed {}

mod private {
    pub trait Sealed {}
}

macro_rules! plain {
    ($($t:ty),*) => {$(impl private::Sealed for $t {} impl Plain for $t {})*};
}
plain!(u8, i8, u16, i16, u32, i32, f32, half::f16, half::bf16);

/// Bytes that stay where they are and unchanged for as long as they are held: a read-only
/// file mapping.
///
/// # Safety
/// `bytes` must return the same slice, with the same contents, on every call for as long as
/// the value lives.
pub unsafe trait Pinned: Send + Sync {
    fn bytes(&self) -> &[u8];
}

/// An array of `T`, owned or borrowed from a [`Pinned`] mapping it keeps alive.
pub enum Store<T: Plain> {
    Owned(Vec<T>),
    Mapped {
        keep: Arc<dyn Pinned>,
        ptr: *const T,
        len: usize,
    },
}

// SAFETY: the only non-Send part is `Mapped`'s pointer, which points into `keep`'s bytes:
// immutable (the `Pinned` contract) and kept alive by `keep`, itself Send + Sync. The store
// then behaves as an `Arc<[T]>`, which is Send for `T: Send + Sync` (every `Plain` type).
unsafe impl<T: Plain> Send for Store<T> {}
// SAFETY: as for `Send`: through `&Store` the values are only read, like `&[T]` with `T: Sync`.
unsafe impl<T: Plain> Sync for Store<T> {}

impl<T: Plain> Store<T> {
    /// `len` values of `T` at byte `offset` of `keep`'s bytes, checked to be inside them and
    /// aligned for `T`.
    pub fn view(keep: &Arc<dyn Pinned>, offset: usize, len: usize) -> Result<Store<T>, String> {
        let bytes = keep.bytes();
        let size = len.checked_mul(size_of::<T>()).ok_or("array size overflows")?;
        let end = offset.checked_add(size).ok_or("array end overflows")?;
        if end > bytes.len() {
            return Err(format!(
                "array at {offset}..{end} is past the end ({} bytes)",
                bytes.len()
            ));
        }
        let ptr = bytes[offset..].as_ptr();
        if !(ptr as usize).is_multiple_of(align_of::<T>()) {
            return Err(format!("array at {offset} is not aligned for its type"));
        }
        Ok(Store::Mapped {
            keep: Arc::clone(keep),
            ptr: ptr.cast(),
            len,
        })
    }

    /// The values as bytes, to write them out.
    pub fn as_bytes(&self) -> &[u8] {
        let s: &[T] = self;
        // SAFETY: T is plain data without padding; the bytes cover exactly the slice.
        unsafe { std::slice::from_raw_parts(s.as_ptr().cast(), std::mem::size_of_val(s)) }
    }

    /// Whether the values live in a shared mapping.
    pub fn is_mapped(&self) -> bool {
        matches!(self, Store::Mapped { .. })
    }
}

impl<T: Plain> Deref for Store<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        match self {
            Store::Owned(v) => v,
            // SAFETY: checked in bounds and aligned by `view`; `keep` holds the bytes, unchanged.
            Store::Mapped { ptr, len, .. } => unsafe { std::slice::from_raw_parts(*ptr, *len) },
        }
    }
}

impl<T: Plain> From<Vec<T>> for Store<T> {
    fn from(v: Vec<T>) -> Store<T> {
        Store::Owned(v)
    }
}

impl<T: Plain> Default for Store<T> {
    fn default() -> Store<T> {
        Store::Owned(Vec::new())
    }
}
