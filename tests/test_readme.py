"""README.md stays true to the code: its settings table lists every train.py setting with its real
default, its test command is the one .ci/run runs, and the config files it names exist."""

import re

from conftest import ROOT

README = (ROOT / 'README.md').read_text()


def train_settings():
    """ {name: default as written} of the settings block of train.py (between its first two fences). """
    block = (ROOT / 'train.py').read_text().split('# ' + '-' * 77)[1]
    return {m[1]: m[2] for m in re.finditer(r'^(\w+) = (.*?)(?:\s+#.*)?$', block, re.M)}


def test_settings_table_matches_train_py():
    rows = dict(re.findall(r'^\| `(\w+)` \| `(.*?)` \|', README, re.M))
    settings = train_settings()
    assert len(settings) > 40
    assert set(rows) == set(settings)
    for name, default in settings.items():
        if name != 'device':  # a conditional expression, described in words
            assert rows[name] == default, name


def test_ci_runs_the_readme_test_command():
    command = re.search(r'```sh\n(bash run\.sh test)\s', README)[1]
    ci = (ROOT / '.ci' / 'run').read_text().strip().splitlines()
    assert command in ci  # as a fresh clone runs it; then the tests that need ../shared's files


def test_named_configs_exist():
    for path in set(re.findall(r'config/\w+\.py', README)):
        assert (ROOT / path).is_file(), path


def test_plot_loss_draws_a_train_log(tmp_path):
    from conftest import run_script
    log = tmp_path / 'train.log'
    log.write_text('iter 0: loss 4.2, time 1.00ms, mfu -100.00%\nstep 0: train loss 4.1831, val loss 4.1796\n'
                   'step 500: train loss 2.2873, val loss 2.3243\n')
    run_script('assets/plot_loss.py', tmp_path / 'out.png', log, cwd=tmp_path)
    assert (tmp_path / 'out.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    log.write_text('iter 0: loss 4.2, time 1.00ms, mfu -100.00%\n')
    p = run_script('assets/plot_loss.py', tmp_path / 'none.png', log, cwd=tmp_path, check=False)
    assert p.returncode != 0 and "has no 'step N: train loss X, val loss Y' lines" in p.stderr
    assert not (tmp_path / 'none.png').exists()
    for args, message in [(['--help'], None), ([tmp_path / 'x.png', 'nothere.log'], "error: cannot read nothere.log"),
                          ([tmp_path / 'x.png', log, '--label=a'], "error: unknown option --label=a; usage: python")]:
        p = run_script('assets/plot_loss.py', *args, cwd=tmp_path, check=False)
        assert 'Traceback' not in p.stderr and (p.returncode == 0 and 'Usage: python assets/plot_loss.py' in p.stdout
                                                if message is None else p.returncode == 1 and message in p.stderr), p
    assert not (tmp_path / 'x.png').exists()
