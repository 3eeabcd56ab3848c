//! Little-endian f32 payloads of the project's media types, copied without assuming alignment.

/// Copies `data` into a new buffer as F32LE.
pub fn buffer_from_f32(data: &[f32]) -> gst::Buffer {
    let mut bytes = Vec::with_capacity(data.len() * 4);
    for v in data {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    gst::Buffer::from_mut_slice(bytes)
}

/// Reads an F32LE payload; `None` if its size is not a multiple of 4.
pub fn f32_from_bytes(bytes: &[u8]) -> Option<Vec<f32>> {
    if !bytes.len().is_multiple_of(4) {
        return None;
    }
    Some(
        bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
    )
}

/// Reads S16LE samples scaled to [-1, 1); `None` if its size is odd.
pub fn f32_from_s16le(bytes: &[u8]) -> Option<Vec<f32>> {
    if !bytes.len().is_multiple_of(2) {
        return None;
    }
    Some(
        bytes
            .chunks_exact(2)
            .map(|c| i16::from_le_bytes([c[0], c[1]]) as f32 / 32768.0)
            .collect(),
    )
}
