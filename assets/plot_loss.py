"""
Plot train/val loss curves from train.py logs (its `step N: train loss X, val loss Y` lines).
Usage: python assets/plot_loss.py OUT.png LOG [LOG ...] [--labels=a,b] [--title=...]
The README's pictures are made this way from real runs: the logs are kept beside them in assets/.
"""
import re
import sys

import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402

STEP = re.compile(r'^step (\d+): train loss ([\d.]+), val loss ([\d.]+)')


def read_log(path):
    steps, train, val = [], [], []
    try:
        with open(path) as f:
            lines = f.readlines()
    except (OSError, UnicodeDecodeError) as e:
        sys.exit(f"error: cannot read {path} ({type(e).__name__}: {e}); pass a train.py log")
    for line in lines:
        m = STEP.match(line)
        if m:
            steps.append(int(m[1]))
            train.append(float(m[2]))
            val.append(float(m[3]))
    if not steps:
        sys.exit(f"error: {path} has no 'step N: train loss X, val loss Y' lines; pass a train.py log")
    return steps, train, val


def main(argv):
    if {'-h', '--help'} & set(argv):
        print(__doc__.strip())
        return
    opts = dict(a[2:].split('=', 1) for a in argv if a.startswith('--') and '=' in a)
    unknown = [a for a in argv if a.startswith('-') and a.split('=')[0] not in ('--labels', '--title')]
    args = [a for a in argv if not a.startswith('-')]
    if len(args) < 2 or unknown:
        sys.exit(f"error: {'unknown option ' + unknown[0] if unknown else 'no log given'}; "
                 f"{__doc__.strip().splitlines()[1].replace('Usage', 'usage')}")
    out, logs = args[0], args[1:]
    labels = opts['labels'].split(',') if 'labels' in opts else logs
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    for log, label in zip(logs, labels):
        steps, train, val = read_log(log)
        line, = ax.plot(steps, val, label=f'{label} val (best {min(val):.3f})')
        ax.plot(steps, train, '--', color=line.get_color(), alpha=0.5, label=f'{label} train')
    ax.set_xlabel('iteration')
    ax.set_ylabel('cross-entropy loss')
    ax.set_title(opts.get('title', 'loss'))
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out)
    print(f"wrote {out}")


if __name__ == '__main__':
    main(sys.argv[1:])
