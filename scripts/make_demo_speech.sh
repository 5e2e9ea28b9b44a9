#!/usr/bin/env bash
# Regenerate assets/demo_speech.wav: about 7.8 s of synthetic English speech, 16 kHz mono 16-bit PCM.
# Needs espeak-ng (Debian: apt-get install -y espeak-ng) and the ffmpeg binary of imageio-ffmpeg.
# Deterministic: the output is byte-identical from run to run on the same espeak-ng version (1.51 here).
# Run from anywhere: `bash scripts/make_demo_speech.sh`.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$ROOT/assets/demo_speech.wav"
FFMPEG="$(python -c 'import imageio_ffmpeg; print(imageio_ffmpeg.get_ffmpeg_exe())')"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

# Three sentences; a 600 ms pause (SSML break) before the last one. espeak-ng writes 22.05 kHz mono.
espeak-ng -v en-us -s 160 -m -w "$TMP/speech.wav" \
  '<speak>Hello! I am a talking face, and my lips follow your voice. <break time="600ms"/> Every frame is driven by the sound, in real time.</speak>'

# 16 kHz mono s16le, no metadata chunks (bit-exact header).
"$FFMPEG" -hide_banner -loglevel error -y -i "$TMP/speech.wav" -ac 1 -ar 16000 -c:a pcm_s16le \
  -map_metadata -1 -fflags +bitexact -flags:a +bitexact "$OUT"
echo "wrote $OUT"
