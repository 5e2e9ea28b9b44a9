#!/usr/bin/env bash
# Installs everything FlowVQ Agent needs on a fresh Debian machine (root or sudo).
set -euo pipefail
cd "$(dirname "$0")"
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
if command -v apt-get >/dev/null 2>&1; then
  # libGL/glib for OpenCV (pulled in by MediaPipe); espeak-ng, flite and festival (with its
  # voices named: --no-install-recommends leaves them out) speak the training data; PortAudio for
  # the microphone; PulseAudio for the virtual microphone (and as the tests' microphone);
  # Chromium as the tests' WebRTC client.
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    libgl1 libglib2.0-0 espeak-ng flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts \
    libportaudio2 pulseaudio pulseaudio-utils libasound2-plugins chromium >/dev/null
fi
# The CPU build of torch first, so nothing later pulls a CUDA build.
python3 -m pip install -q torch==2.13.0
python3 -m pip install -q -e '.[dev]'
