#!/usr/bin/env python3
"""Reference log-mel of one Whisper window, computed by faster-whisper's NumPy FeatureExtractor.

  mel_ref.py WAV OUT.f32 [N_MELS]        (N_MELS: 80, default, or 128)

Takes the first 30 s of a 16 kHz mono 16-bit PCM WAV (samples / 32768), zero-pads it to exactly
480000 samples, and writes Whisper's log-mel of that window: N_MELS x 3000, little-endian f32,
mel-major (row m holds the 3000 frames of mel band m). Whisper's definition: STFT with reflect
centre padding (200 samples each side), periodic Hann window of 400, hop 160, |X|^2 of the 201
bins, Slaney mel filters, log10 clamped at 1e-10, floored at (max over the window - 8), then
(x + 4) / 4. The STFT gives 3001 frames for 480000 samples; the last one is dropped. The
extractor is called with padding=0: its default (160) appends samples and yields 3001 frames.
Prints the shape.
"""
import sys
import wave

import numpy as np
from faster_whisper.feature_extractor import FeatureExtractor

SAMPLE_RATE = 16000
WINDOW_SAMPLES = 480000
FRAMES = 3000


def read_wav(path):
    with wave.open(path, "rb") as w:
        if w.getsampwidth() != 2 or w.getcomptype() != "NONE":
            sys.exit(f"{path}: not 16-bit PCM")
        if w.getframerate() != SAMPLE_RATE:
            sys.exit(f"{path}: {w.getframerate()} Hz, expected {SAMPLE_RATE}")
        channels = w.getnchannels()
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    if channels > 1:
        sys.exit(f"{path}: {channels} channels, expected mono")
    return pcm.astype(np.float32) / 32768.0


def log_mel(samples, n_mels):
    window = np.zeros(WINDOW_SAMPLES, dtype=np.float32)
    n = min(len(samples), WINDOW_SAMPLES)
    window[:n] = samples[:n]
    mel = FeatureExtractor(feature_size=n_mels)(window, padding=0)
    assert mel.shape == (n_mels, FRAMES), mel.shape
    return np.ascontiguousarray(mel, dtype="<f4")


def main():
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    n_mels = int(sys.argv[3]) if len(sys.argv) == 4 else 80
    mel = log_mel(read_wav(sys.argv[1]), n_mels)
    mel.tofile(sys.argv[2])
    print(f"{mel.shape[0]}x{mel.shape[1]}")


if __name__ == "__main__":
    main()
