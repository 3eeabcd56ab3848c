#!/usr/bin/env python3
"""Reference encoder states of one Whisper window, computed by CTranslate2 (faster-whisper's engine).

  encoder_ref.py MODEL_DIR MEL.f32 OUT.f32

MODEL_DIR is a CTranslate2 Whisper directory (model.bin, config.json, ...). MEL.f32 is a
log-mel window as written by mel_ref.py: n_mels x 3000 little-endian f32, mel-major (n_mels is
taken from the file size). Writes the encoder output, 1500 x d_model little-endian f32, row-major
(row t = position t), computed in float32 on the CPU. Prints the shape.
"""
import sys

import ctranslate2
import numpy as np

FRAMES = 3000


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    model_dir, mel_path, out_path = sys.argv[1:]
    mel = np.fromfile(mel_path, dtype="<f4")
    if mel.size % FRAMES:
        sys.exit(f"{mel_path}: {mel.size} floats, not a multiple of {FRAMES}")
    mel = mel.reshape(mel.size // FRAMES, FRAMES).astype(np.float32)
    model = ctranslate2.models.Whisper(model_dir, device="cpu", compute_type="float32")
    if mel.shape[0] != model.n_mels:
        sys.exit(f"{mel_path}: {mel.shape[0]} mel bands, the model expects {model.n_mels}")
    out = model.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(mel[None])))
    states = np.ascontiguousarray(np.array(out)[0], dtype="<f4")
    states.tofile(out_path)
    print(f"{states.shape[0]}x{states.shape[1]}")


if __name__ == "__main__":
    main()
