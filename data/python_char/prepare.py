"""
Python source as characters, built without network from the standard library of the interpreter that
runs this script: the quick start that works anywhere (config/train_python_char.py trains on it).
Writes train.bin / val.bin (first 90% / last 10%) and meta.pkl.

The corpus is the concatenation of the .py files under src_dir in sorted relative-path order, keeping a
file only if it
- is not inside a test, tests, idle_test, site-packages, dist-packages or __pycache__ folder,
- has at most max_file_bytes bytes (this drops a few huge modules),
- is ASCII with no control characters but newline and tab (keeps the vocabulary small and printable),
- can be read (a broken symlink is skipped, and counted).
The sizes depend on the Python version (readme.md says which one was measured).
$ python data/python_char/prepare.py
"""
import os
import sys
import sysconfig

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, _ROOT)
from data_io import write_char_dataset  # noqa: E402

# -----------------------------------------------------------------------------
src_dir = '' # folder of .py files to read; '' means this interpreter's standard library
max_file_bytes = 100_000 # bigger files are skipped
# -----------------------------------------------------------------------------
exec(open(os.path.join(_ROOT, 'configurator.py')).read()) # overrides from command line or config file

SKIP_DIRS = {'test', 'tests', 'idle_test', 'site-packages', 'dist-packages', '__pycache__'}
PLAIN = set(range(32, 127)) | {ord('\n'), ord('\t')}  # printable ASCII bytes, newline, tab

src_dir = src_dir or sysconfig.get_paths()['stdlib']
if not os.path.isdir(src_dir):
    sys.exit(f"error: src_dir {src_dir} is not a folder")
paths = []
for folder, dirs, files in os.walk(src_dir):
    dirs[:] = [d for d in dirs if d not in SKIP_DIRS]
    paths += [os.path.relpath(os.path.join(folder, name), src_dir) for name in files if name.endswith('.py')]
kept, too_big, not_plain, unreadable = [], 0, 0, 0
for path in sorted(paths):
    try:
        with open(os.path.join(src_dir, path), 'rb') as f:
            data = f.read()
    except OSError:  # a broken symlink, a file without read permission
        unreadable += 1
        continue
    if len(data) > max_file_bytes:
        too_big += 1
    elif set(data) <= PLAIN:
        kept.append(data.decode('ascii'))
    else:
        not_plain += 1
text = ''.join(kept)
print(f"{src_dir}: kept {len(kept):,} of {len(paths):,} .py files "
      f"({too_big:,} over {max_file_bytes:,} bytes, {not_plain:,} not plain ASCII" +
      (f", {unreadable:,} unreadable" if unreadable else "") + ")")

data_dir = os.path.dirname(os.path.abspath(__file__))
try:
    vocab_size, n_train, n_val = write_char_dataset(data_dir, text, f"the .py files of {src_dir}")
except ValueError as e:
    sys.exit(f"error: {e}")
print(f"length of dataset in characters: {len(text):,}")
print(f"vocab size: {vocab_size:,}")
print(f"train has {n_train:,} tokens")
print(f"val has {n_val:,} tokens")
