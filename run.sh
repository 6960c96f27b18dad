#!/usr/bin/env bash
# The two commands of the README, each setting itself up in ./.venv:
#   bash run.sh quickstart   prepare data, train the CPU quick start, sample from it
#   bash run.sh test         the whole test suite (what CI runs); more arguments go to pytest
set -euo pipefail
cd "$(dirname "$0")"
case "${1:-}" in
quickstart|test) ;;
*) echo "usage: bash run.sh quickstart|test" >&2; exit 2 ;;
esac
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
    .venv/bin/pip install -q --upgrade pip
fi
.venv/bin/pip install -q -r requirements.txt -r requirements-dev.txt
py=.venv/bin/python
case "${1:-}" in
quickstart)
    # tiny Shakespeare when it can be had (downloaded or already in place), else the offline Python corpus
    if $py data/shakespeare_char/prepare.py; then
        $py train.py config/train_shakespeare_char_cpu.py
        $py sample.py --out_dir=out-shakespeare-char-cpu --num_samples=2 --max_new_tokens=300
    else
        echo "tiny Shakespeare unavailable: training on the Python standard library instead"
        $py data/python_char/prepare.py
        $py train.py config/train_python_char.py
        $py sample.py --out_dir=out-python-char --num_samples=2 --max_new_tokens=300
    fi ;;
test)
    $py -m pytest "${@:2}" ;;
esac
