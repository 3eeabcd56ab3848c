//! Reader for CTranslate2's `model.bin` (binary version ≤ 6): a list of named tensors and aliases.
//! Every read is bounds-checked, so a truncated or corrupt file is an error, never a panic.

use std::collections::HashMap;

use half::{bf16, f16};

/// Longest name and highest rank accepted: real ones are far below, and a corrupt length must
/// not turn the error messages that quote them into dumps of the file.
const MAX_NAME: usize = 256;
const MAX_RANK: usize = 8;

#[derive(Debug, Clone)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

pub struct ModelBin {
    pub spec: String,
    pub tensors: HashMap<String, Tensor>,
    pub aliases: HashMap<String, String>,
}

impl ModelBin {
    /// Names of the tensors and aliases.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().chain(self.aliases.keys()).map(String::as_str)
    }

    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.tensors.get(name).or_else(|| self.aliases.get(name).and_then(|t| self.tensors.get(t)))
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], String> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len()).ok_or_else(|| {
            format!("truncated: needs {n} more bytes for {what} at offset {}, file has {}", self.pos, self.bytes.len())
        })?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self, what: &str) -> Result<u8, String> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &str) -> Result<u16, String> {
        Ok(u16::from_le_bytes(self.take(2, what)?.try_into().unwrap()))
    }

    fn u32(&mut self, what: &str) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4, what)?.try_into().unwrap()))
    }

    /// u16 length (including a trailing NUL), then the bytes.
    fn string(&mut self, what: &str) -> Result<String, String> {
        let len = self.u16(what)? as usize;
        if len > MAX_NAME {
            return Err(format!("{what} at offset {} is {len} bytes long, more than any CTranslate2 name", self.pos - 2));
        }
        let raw = self.take(len, what)?;
        let raw = raw.strip_suffix(&[0]).unwrap_or(raw);
        String::from_utf8(raw.to_vec()).map_err(|_| format!("{what} is not UTF-8 at offset {}", self.pos))
    }
}

/// Decodes one tensor's bytes to f32. Integer dtypes hold scalars (flags, head counts).
fn decode(dtype: u8, raw: &[u8], name: &str) -> Result<Vec<f32>, String> {
    Ok(match dtype {
        0 => raw.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect(),
        1 => raw.iter().map(|&b| b as i8 as f32).collect(),
        2 => raw.chunks_exact(2).map(|c| i16::from_le_bytes(c.try_into().unwrap()) as f32).collect(),
        3 => raw.chunks_exact(4).map(|c| i32::from_le_bytes(c.try_into().unwrap()) as f32).collect(),
        4 => raw.chunks_exact(2).map(|c| f16::from_le_bytes(c.try_into().unwrap()).to_f32()).collect(),
        5 => raw.chunks_exact(2).map(|c| bf16::from_le_bytes(c.try_into().unwrap()).to_f32()).collect(),
        other => return Err(format!("tensor {name} has unknown dtype id {other}")),
    })
}

fn dtype_size(dtype: u8) -> Option<usize> {
    match dtype {
        0 | 3 => Some(4),
        1 => Some(1),
        2 | 4 | 5 => Some(2),
        _ => None,
    }
}

pub fn parse(bytes: &[u8]) -> Result<ModelBin, String> {
    let mut r = Reader { bytes, pos: 0 };
    let version = r.u32("binary version")?;
    if !(1..=6).contains(&version) {
        return Err(format!("unsupported binary version {version} (expected 1 to 6; not a CTranslate2 model?)"));
    }
    let spec = if version >= 2 { r.string("spec name")? } else { String::new() };
    if version >= 2 {
        r.u32("spec revision")?;
    }
    let n_vars = r.u32("variable count")? as usize;
    let mut tensors = HashMap::new();
    for i in 0..n_vars {
        let name = r.string(&format!("name of variable {i}"))?;
        let rank = r.u8(&format!("rank of {name}"))? as usize;
        if rank > MAX_RANK {
            return Err(format!("tensor {name} has rank {rank}, more than {MAX_RANK}"));
        }
        let mut shape = Vec::with_capacity(rank);
        for _ in 0..rank {
            shape.push(r.u32(&format!("shape of {name}"))? as usize);
        }
        let dtype = r.u8(&format!("dtype of {name}"))?;
        let n_bytes = if version >= 4 { r.u32(&format!("size of {name}"))? as usize } else { 0 };
        let elem = dtype_size(dtype).ok_or_else(|| format!("tensor {name} has unknown dtype id {dtype}"))?;
        let count = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).ok_or_else(|| format!("tensor {name}: shape overflows"))?;
        let expect = count.checked_mul(elem).ok_or_else(|| format!("tensor {name}: size overflows"))?;
        if version >= 4 && n_bytes != expect {
            return Err(format!("tensor {name}: shape {shape:?} needs {expect} bytes, file says {n_bytes}"));
        }
        let raw = r.take(expect, &format!("data of {name}"))?;
        let data = decode(dtype, raw, &name)?;
        if data.iter().any(|v| !v.is_finite()) {
            return Err(format!("tensor {name} holds NaN or infinite values"));
        }
        tensors.insert(name, Tensor { shape, data });
    }
    let mut aliases = HashMap::new();
    if version >= 3 {
        let n_aliases = r.u32("alias count")?;
        for _ in 0..n_aliases {
            let alias = r.string("alias name")?;
            let target = r.string("alias target")?;
            aliases.insert(alias, target);
        }
    }
    if r.pos != bytes.len() {
        return Err(format!("{} unexpected bytes after the last entry", bytes.len() - r.pos));
    }
    Ok(ModelBin { spec, tensors, aliases })
}
