//! Whisper's byte-level BPE vocabulary: id → bytes for decoding, and the ids of special tokens.
//! Token ids come from `vocabulary.txt` (one token per line, in id order); `tokenizer.json`'s
//! added tokens are checked against it so that a mismatched pair of files is caught at load.

use std::collections::HashMap;

pub struct Tokenizer {
    /// Bytes of every token; special tokens keep their `<|…|>` text.
    token_bytes: Vec<Vec<u8>>,
    ids: HashMap<String, u32>,
    pub eot: u32,
    pub sot: u32,
    pub translate: u32,
    pub transcribe: u32,
    pub sot_lm: u32,
    pub sot_prev: u32,
    pub no_speech: Option<u32>,
    pub no_timestamps: u32,
    pub timestamp_begin: u32,
    /// `(code, id)` of every language token, in vocabulary order.
    pub languages: Vec<(String, u32)>,
    /// `tokenizer.json`'s BPE, for turning prompt text into tokens, built at load or on first use
    /// from `encoder_json`.
    encoder: std::sync::OnceLock<Option<Box<tokenizers::Tokenizer>>>,
    encoder_json: Vec<u8>,
}

/// GPT-2's reversible map from bytes to printable characters, inverted: indexed by character
/// (all below U+0144), a table rather than a hash map (every character of the vocabulary goes
/// through it at each load).
fn unicode_to_byte() -> Vec<Option<u8>> {
    let mut printable: Vec<u32> = (b'!' as u32..=b'~' as u32)
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .collect();
    let mut chars = printable.clone();
    let mut extra = 0;
    for b in 0..256u32 {
        if !printable.contains(&b) {
            printable.push(b);
            chars.push(256 + extra);
            extra += 1;
        }
    }
    let mut table = vec![None; 256 + extra as usize];
    for (&b, &c) in printable.iter().zip(&chars) {
        table[c as usize] = Some(b as u8);
    }
    table
}

impl Tokenizer {
    /// `vocabulary` is the text of `vocabulary.txt`; `added_tokens` are `(content, id)` pairs of
    /// `tokenizer.json`. Errors say what is wrong, without the file name (the caller adds it).
    pub fn new(vocabulary: &str, added_tokens: &[(String, u32)]) -> Result<Tokenizer, String> {
        let decode_map = unicode_to_byte();
        let lines = vocabulary.lines().count();
        let mut token_bytes = Vec::with_capacity(lines);
        let mut ids = HashMap::with_capacity(lines);
        for (id, line) in vocabulary.lines().enumerate() {
            let bytes = if line.starts_with("<|") && line.ends_with("|>") {
                line.as_bytes().to_vec()
            } else {
                line.chars()
                    .map(|c| decode_map.get(c as usize).copied().flatten().ok_or(()))
                    .collect::<Result<Vec<u8>, ()>>()
                    .map_err(|_| format!("line {}: token {line:?} is not byte-level BPE", id + 1))?
            };
            ids.entry(line.to_string()).or_insert(id as u32);
            token_bytes.push(bytes);
        }
        for (content, id) in added_tokens {
            if ids.get(content) != Some(id) {
                return Err(format!(
                    "added token {content:?} has id {id} in tokenizer.json but not in vocabulary.txt"
                ));
            }
        }
        let special = |name: &str| {
            ids.get(name)
                .copied()
                .ok_or_else(|| format!("vocabulary has no {name} token"))
        };
        let sot = special("<|startoftranscript|>")?;
        let translate = special("<|translate|>")?;
        let languages = (sot + 1..translate)
            .filter_map(|id| {
                let t = std::str::from_utf8(&token_bytes[id as usize]).ok()?;
                Some((t.strip_prefix("<|")?.strip_suffix("|>")?.to_string(), id))
            })
            .collect();
        let t = Tokenizer {
            eot: special("<|endoftext|>")?,
            sot,
            translate,
            transcribe: special("<|transcribe|>")?,
            sot_lm: special("<|startoflm|>")?,
            sot_prev: special("<|startofprev|>")?,
            no_speech: special("<|nospeech|>").or_else(|_| special("<|nocaptions|>")).ok(),
            no_timestamps: special("<|notimestamps|>")?,
            timestamp_begin: special("<|0.00|>")?,
            languages,
            token_bytes,
            ids,
            encoder: std::sync::OnceLock::new(),
            encoder_json: Vec::new(),
        };
        t.check_order()?;
        Ok(t)
    }

    /// Decoding takes the ids below `<|endoftext|>` for text and those from `<|0.00|>` on for
    /// timestamps, so the special tokens must come in Whisper's order.
    fn check_order(&self) -> Result<(), String> {
        let order = [
            ("<|endoftext|>", self.eot),
            ("<|startoftranscript|>", self.sot),
            ("<|translate|>", self.translate),
            ("<|transcribe|>", self.transcribe),
            ("<|startoflm|>", self.sot_lm),
            ("<|startofprev|>", self.sot_prev),
            ("<|notimestamps|>", self.no_timestamps),
            ("<|0.00|>", self.timestamp_begin),
        ];
        if let Some(w) = order.windows(2).find(|w| w[0].1 >= w[1].1) {
            return Err(format!(
                "{} (id {}) is not before {} (id {}), as Whisper has them",
                w[0].0, w[0].1, w[1].0, w[1].1
            ));
        }
        if let Some(ns) = self
            .no_speech
            .filter(|&ns| ns <= self.eot || ns >= self.timestamp_begin)
        {
            return Err(format!("the no-speech token (id {ns}) is not among the special tokens"));
        }
        // Times are read off the id: <|0.00|>, <|0.02|>, … to the end.
        let first_ts = self.timestamp_begin as usize;
        for (k, bytes) in self.token_bytes[first_ts..].iter().enumerate() {
            let expected = format!("<|{:.2}|>", k as f64 * super::SECONDS_PER_TIMESTAMP);
            if bytes != expected.as_bytes() {
                return Err(format!(
                    "token {} is {:?}, expected the timestamp {expected}",
                    first_ts + k,
                    String::from_utf8_lossy(bytes)
                ));
            }
        }
        Ok(())
    }

    /// Adds `tokenizer.json`'s BPE for [`Tokenizer::encode`]; its ids must be this vocabulary's.
    pub fn with_encoder(mut self, tokenizer_json: &[u8]) -> Result<Tokenizer, String> {
        let bpe =
            tokenizers::Tokenizer::from_bytes(tokenizer_json).map_err(|e| format!("cannot build its BPE: {e}"))?;
        let probe = bpe
            .encode(" hello world", false)
            .map_err(|e| format!("its BPE fails: {e}"))?;
        if probe.get_ids().iter().any(|&id| id as usize >= self.token_bytes.len())
            || self.decode(probe.get_ids()) != " hello world"
        {
            return Err("its BPE does not match vocabulary.txt".into());
        }
        self.encoder = std::sync::OnceLock::from(Some(Box::new(bpe)));
        Ok(self)
    }

    /// [`with_encoder`](Self::with_encoder) for a `tokenizer.json` known to pass its checks:
    /// the BPE is built when first used.
    pub fn with_lazy_encoder(mut self, tokenizer_json: Vec<u8>) -> Tokenizer {
        self.encoder_json = tokenizer_json;
        self
    }

    /// Tokens of `text` (no special tokens); empty without an encoder.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let bpe = self
            .encoder
            .get_or_init(|| tokenizers::Tokenizer::from_bytes(&self.encoder_json).ok().map(Box::new));
        let Some(bpe) = bpe else { return Vec::new() };
        bpe.encode(text, false)
            .map(|e| e.get_ids().iter().copied().filter(|&id| id < self.eot).collect())
            .unwrap_or_default()
    }

    pub fn vocab_size(&self) -> usize {
        self.token_bytes.len()
    }

    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.ids.get(token).copied()
    }

    pub fn language_token(&self, code: &str) -> Option<u32> {
        self.languages.iter().find(|(c, _)| c == code).map(|&(_, id)| id)
    }

    pub fn language_code(&self, id: u32) -> Option<&str> {
        self.languages.iter().find(|&&(_, i)| i == id).map(|(c, _)| c.as_str())
    }

    pub fn is_timestamp(&self, id: u32) -> bool {
        id >= self.timestamp_begin
    }

    /// Text of the given tokens; special and timestamp tokens are skipped.
    pub fn decode(&self, ids: &[u32]) -> String {
        let bytes: Vec<u8> = ids
            .iter()
            .filter(|&&id| id < self.eot)
            .filter_map(|&id| self.token_bytes.get(id as usize))
            .flatten()
            .copied()
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_map_covers_all_bytes_once() {
        let m = unicode_to_byte();
        assert_eq!(m.iter().flatten().count(), 256);
        assert_eq!(m['Ġ' as usize], Some(b' '));
        assert_eq!(m['a' as usize], Some(b'a'));
        let mut seen: Vec<u8> = m.iter().flatten().copied().collect();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 256);
    }

    #[test]
    fn decodes_bpe_and_finds_specials() {
        let vocab = "Hello\nĠworld\nĠÃ¼ber\n<|endoftext|>\n<|startoftranscript|>\n<|en|>\n<|de|>\n<|translate|>\n<|transcribe|>\n<|startoflm|>\n<|startofprev|>\n<|nospeech|>\n<|notimestamps|>\n<|0.00|>\n<|0.02|>";
        let t = Tokenizer::new(vocab, &[("<|en|>".into(), 5)]).unwrap();
        assert_eq!(t.decode(&[0, 1, 2, 3, 13]), "Hello world über");
        assert_eq!(t.languages, vec![("en".to_string(), 5), ("de".to_string(), 6)]);
        assert_eq!((t.eot, t.sot, t.timestamp_begin, t.no_speech), (3, 4, 13, Some(11)));
        assert!(Tokenizer::new(vocab, &[("<|en|>".into(), 6)]).is_err());
        assert!(Tokenizer::new("a\nb", &[]).is_err());
    }
}
