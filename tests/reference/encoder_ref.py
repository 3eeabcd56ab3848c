#!/usr/bin/env python3
"""Reference encoder states of one Whisper window, computed by CTranslate2 (faster-whisper's engine).

  encoder_ref.py MODEL_DIR MEL.f32 OUT.f32 [FRAMES]

MODEL_DIR is a CTranslate2 Whisper directory (model.bin, config.json, ...). MEL.f32 is a
log-mel window as written by mel_ref.py: n_mels x 3000 little-endian f32, mel-major (n_mels is
taken from the file size). Writes the encoder output, 1500 x d_model little-endian f32, row-major
(row t = position t), computed in float32 on the CPU. Prints the shape. With FRAMES (1 to 1500),
the encoder runs over the first 2 x FRAMES mel frames only (CTranslate2 takes any length and
slices its positional embedding to it: whisper.cpp's audio_ctx) and writes FRAMES x d_model.
"""
import sys

import ctranslate2
import numpy as np

FRAMES = 3000


def main():
    if len(sys.argv) not in (4, 5):
        sys.exit(__doc__)
    model_dir, mel_path, out_path = sys.argv[1:4]
    frames = int(sys.argv[4]) if len(sys.argv) == 5 else FRAMES // 2
    if not 1 <= frames <= FRAMES // 2:
        sys.exit(f"FRAMES {frames} is not 1 to {FRAMES // 2}")
    mel = np.fromfile(mel_path, dtype="<f4")
    if mel.size % FRAMES:
        sys.exit(f"{mel_path}: {mel.size} floats, not a multiple of {FRAMES}")
    mel = mel.reshape(mel.size // FRAMES, FRAMES).astype(np.float32)
    model = ctranslate2.models.Whisper(model_dir, device="cpu", compute_type="float32")
    if mel.shape[0] != model.n_mels:
        sys.exit(f"{mel_path}: {mel.shape[0]} mel bands, the model expects {model.n_mels}")
    mel = np.ascontiguousarray(mel[None, :, : 2 * frames])
    out = model.encode(ctranslate2.StorageView.from_array(mel))
    states = np.ascontiguousarray(np.array(out)[0], dtype="<f4")
    states.tofile(out_path)
    print(f"{states.shape[0]}x{states.shape[1]}")


if __name__ == "__main__":
    main()
