"""Guards configurator.py: config files and --key=value overrides reach the script's settings with
their types checked, and every mistake stops the script with one line on stderr and exit code 2.

Most tests exec it inside a stub script (the same way train.py, sample.py and bench.py do, without the
seconds of importing torch); one runs train.py itself."""

import json
import re
import subprocess
import sys

import pytest
import torch

from conftest import ROOT, run_script

STUB = f"""
import json, os
batch_size = 12
learning_rate = 6e-4
compile = True
init_from = 'scratch'
dataset = 'openwebtext'
_private = 1
BPE_FILE = 'bpe.json'  # an imported constant
exec(open({str(ROOT / 'configurator.py')!r}).read())
print(json.dumps(dict(batch_size=batch_size, learning_rate=learning_rate, compile=compile,
                      init_from=init_from, dataset=dataset)))
"""


@pytest.fixture
def stub(tmp_path):
    path = tmp_path / 'script.py'
    path.write_text(STUB)

    def run(*args, env=None):
        return subprocess.run([sys.executable, str(path), *args], cwd=tmp_path, capture_output=True, text=True,
                              env=env)
    return run


def settings(p):
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout.splitlines()[-1])


def error(p):
    """ The one stderr line of a failed run. """
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert 'Traceback' not in p.stderr
    return lines[0]


def test_overrides_are_parsed_and_printed_once(stub):
    p = stub('--batch_size=32', '--learning_rate=1e-3', '--compile=False', '--init_from=gpt2', '--batch_size=64')
    assert settings(p) == dict(batch_size=64, learning_rate=1e-3, compile=False, init_from='gpt2',
                               dataset='openwebtext')
    printed = [line for line in p.stdout.splitlines() if line.startswith('Overriding')]
    assert printed == ["Overriding: batch_size = 64", "Overriding: learning_rate = 0.001",
                       "Overriding: compile = False", "Overriding: init_from = 'gpt2'"]


def test_int_for_float_becomes_float_and_strings_stay_raw(stub):
    s = settings(stub('--learning_rate=1', '--dataset=123', "--init_from='gpt2-xl'", '--compile=True'))
    assert s['learning_rate'] == 1.0 and isinstance(s['learning_rate'], float)
    assert s['dataset'] == '123'  # a str setting takes the text as typed
    assert s['init_from'] == "'gpt2-xl'"


def test_config_file_then_command_line(stub, tmp_path):
    (tmp_path / 'cfg.py').write_text("import math\n"
                                     "batch_size = batch_size * 2  # files see the current settings\n"
                                     "learning_rate = 3\n"
                                     "dataset = 'shakespeare_char'\n")
    p = stub('cfg.py', '--dataset=python_char')
    assert settings(p) == dict(batch_size=24, learning_rate=3.0, compile=True, init_from='scratch',
                               dataset='python_char')
    printed = [line for line in p.stdout.splitlines() if line.startswith('Overriding')]
    assert printed == ["Overriding: batch_size = 24", "Overriding: learning_rate = 3.0",
                       "Overriding: dataset = 'python_char'"]


def test_arguments_apply_in_the_order_given(stub, tmp_path):
    """ A config file after an override sees it, and a second file the first's settings. """
    (tmp_path / 'a.py').write_text("batch_size = batch_size * 2\n")
    (tmp_path / 'b.py').write_text("batch_size = batch_size + 1\n")
    assert settings(stub('--batch_size=5', 'a.py', 'b.py'))['batch_size'] == 11  # (5 * 2) + 1
    assert settings(stub('b.py', 'a.py', '--learning_rate=1'))['batch_size'] == 26  # (12 + 1) * 2


def test_config_file_setting_a_default_value_counts_as_given(stub, tmp_path):
    # small ints, bools and short strings are the very objects of the defaults: the file's assignment must
    # still count, or train.py's check that a resume keeps the architecture would not see it
    (tmp_path / 'cfg.py').write_text("batch_size = 12\ncompile = True\ninit_from = 'scratch'\n"
                                     "def helper():\n    dataset = 'x'\n")
    p = stub('cfg.py')
    printed = [line for line in p.stdout.splitlines() if line.startswith('Overriding')]
    assert printed == ["Overriding: batch_size = 12", "Overriding: compile = True", "Overriding: init_from = 'scratch'"]


def test_only_rank_0_prints(stub):
    import os
    p = stub('--batch_size=32', env={**os.environ, 'RANK': '1'})
    assert settings(p)['batch_size'] == 32
    assert 'Overriding' not in p.stdout


@pytest.mark.parametrize('args, message', [
    (['--batch_sise=32'], "error: unknown setting 'batch_sise' (--batch_sise=32); did you mean 'batch_size'?"),
    (['--zzz=1'], "error: unknown setting 'zzz' (--zzz=1); the settings are the globals at the top of script.py"),
    (['--_private=2'], "error: unknown setting '_private'"),
    (['--BPE_FILE=x.json'], "error: unknown setting 'BPE_FILE'"),
    (['--batch_size=1.5'], "error: batch_size expects int (default 12), got float 1.5 (--batch_size=1.5)"),
    (['--compile=false'], "error: compile expects bool (default True), got str 'false' (--compile=false)"),
    (['--batch_size=True'], "error: batch_size expects int (default 12), got bool True"),
    (['--learning_rate=abc'], "error: learning_rate expects float (default 0.0006), got str 'abc'"),
    (['--batch_size'], "error: '--batch_size': settings are given as --key=value"),
    (['batch_size=3'], "error: 'batch_size=3': settings are given as --key=value"),
    (['nope.py'], "error: config file 'nope.py' not found"),
])
def test_bad_arguments(stub, args, message):
    assert error(stub(*args)).startswith(message)


@pytest.mark.parametrize('text, message', [
    ("learning_rat = 1e-3\n", "error: unknown setting 'learning_rat' (cfg.py); did you mean 'learning_rate'?"),
    ("compile = 0\n", "error: compile expects bool (default True), got int 0 (cfg.py)"),
    ("batch_size = (\n", "error: cfg.py: SyntaxError:"),
    ("batch_size = None\n", "error: batch_size expects int (default 12), got NoneType None (cfg.py)"),
    ("import numpy as np\nbatch_size = np.int64(3)\n", "error: batch_size expects int (default 12), got int64 np.int64(3) (cfg.py)"),
])
def test_bad_config_files(stub, tmp_path, text, message):
    (tmp_path / 'cfg.py').write_text(text)
    assert error(stub('cfg.py')).startswith(message)


def test_train_py_uses_it(tmp_path):
    p = run_script('train.py', '--lerning_rate=1e-3', cwd=tmp_path, check=False)
    assert error(p) == ("error: unknown setting 'lerning_rate' (--lerning_rate=1e-3); "
                        "did you mean 'learning_rate'?")


@pytest.mark.parametrize('config', sorted((ROOT / 'config').glob('*.py')), ids=lambda p: p.name)
def test_config_files_set_train_settings(config, monkeypatch, capsys):
    """ Every config/*.py passes the configurator against train.py's defaults: no typo, no wrong type. """
    fence = '# ' + '-' * 77 + '\n'
    defaults = (ROOT / 'train.py').read_text().split(fence)[1]  # the settings block
    scope = {'torch': torch}
    exec(defaults, scope)
    monkeypatch.setattr(sys, 'argv', ['train.py', str(config)])
    exec((ROOT / 'configurator.py').read_text(), scope)
    assert 'Overriding' in capsys.readouterr().out


SCRIPTS = ['train.py', 'sample.py', 'bench.py', 'export.py', 'eval_hellaswag.py', 'chat.py',
           *sorted(str(p.relative_to(ROOT)) for p in ROOT.glob('data/*/prepare.py'))]


@pytest.mark.parametrize('script', SCRIPTS)
def test_help_lists_every_setting_with_its_comment(script):
    """ --help (and -h) print each setting of the script's settings block, its default and its comment. """
    block = (ROOT / script).read_text().split('# ' + '-' * 77)[1]
    settings = re.findall(r'^(\w+) = .*? # (.*)$', block, re.M)
    assert settings
    for flag in (['--help', '-h'] if script == 'train.py' else ['--help']):
        p = run_script(script, flag)
        assert p.returncode == 0 and p.stderr == '', p.stderr
        assert 'usage: python' in p.stdout
        for name, comment in settings:
            assert re.search(rf'^  {name} = .*  # {re.escape(comment.strip())}$', p.stdout, re.M), (name, p.stdout)
