"""
Poor Man's Configurator, exec'd at the top of train.py, sample.py, bench.py, export.py and data/*/prepare.py
(it sees their globals):
$ python train.py config/override_file.py --batch_size=32
Positional arguments are config files (Python, exec'd with the script's settings in scope), then
--key=value overrides, both applied in order. A setting is any global of the script that is a bool,
int, float or str and whose name neither starts with '_' nor is in capitals (an imported constant).
Every value is checked against its default: unknown names and wrong types stop the script with a
one-line error (exit code 2), not a traceback.
-h or --help prints the settings, their defaults and comments, and exits. The settings given (by a
config file or the command line) are left in the script's `_overridden`, so it can tell a default
from a choice.
I know people are not going to love this, I just really dislike configuration complexity and
having to prepend config. to every single variable. If someone comes up with a better simple
Python solution I am all ears.
"""


def _configure(scope):
    import ast
    import builtins  # compile: train.py has a setting of that name
    import difflib
    import os
    import sys

    def fail(message):
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)

    settings = {k: v for k, v in scope.items()
                if not k.startswith('_') and not k.isupper() and isinstance(v, (bool, int, float, str))}
    script = os.path.basename(sys.argv[0])

    if {'-h', '--help'} & set(sys.argv[1:]):
        # the trailing comment of each setting's line in the script is its help
        source = open(scope['__file__'], encoding='utf-8').read()
        comments = {}
        for line in source.splitlines():
            name, eq, rest = line.partition(' = ')
            if eq and name in settings and name not in comments:
                comments[name] = rest.split(' # ', 1)[1].strip() if ' # ' in rest else ''
        doc = ast.get_docstring(ast.parse(source)) or ''  # the script's own (exec'ing this file replaced __doc__)
        print(f"{doc}\n\n" if doc else '', end='')
        print(f"usage: python {script} [config_file.py ...] [--setting=value ...]\n\nsettings (default  # meaning):")
        width = max(len(f"{k} = {v!r}") for k, v in settings.items())
        for key, value in settings.items():
            print(f"  {f'{key} = {value!r}':<{width}}  # {comments.get(key, '')}".rstrip(' #'))
        sys.exit(0)

    def checked(key, value, source):
        if key not in settings:
            close = difflib.get_close_matches(key, settings, n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"the settings are the globals at the top of {script}"
            fail(f"unknown setting '{key}' ({source}); {hint}")
        default = settings[key]
        if type(value) is int and type(default) is float:
            return float(value)  # 3 for a float setting means 3.0
        if type(value) is not type(default):
            fail(f"{key} expects {type(default).__name__} (default {default!r}), "
                 f"got {type(value).__name__} {value!r} ({source})")
        return value

    overrides = {}
    for arg in sys.argv[1:]:
        if not arg.startswith('--'):
            if '=' in arg:
                fail(f"'{arg}': settings are given as --key=value")
            if not os.path.isfile(arg):
                fail(f"config file '{arg}' not found")
            config = dict(scope)  # a config file may read the settings it doesn't change
            try:
                source = open(arg).read()
                exec(builtins.compile(source, arg, 'exec'), config)
            except Exception as e:
                fail(f"{arg}: {type(e).__name__}: {e}")
            # the names the file assigns at its top level, even to a setting's default value
            assigned = set()
            for node in ast.parse(source).body:
                if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    assigned |= {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
            for key, value in config.items():
                if key.startswith('_') or key not in assigned:
                    continue  # imports and the settings the file only reads
                if key in settings or isinstance(value, (bool, int, float, str)):  # a setting's None is no setting
                    overrides[key] = checked(key, value, arg)  # (a helper of another type is the file's own)
        else:
            key, eq, raw = arg[2:].partition('=')
            if not eq:
                fail(f"'{arg}': settings are given as --key=value")
            try:
                value = ast.literal_eval(raw)
            except (SyntaxError, ValueError):
                value = raw  # a bare word: --init_from=gpt2
            if isinstance(settings.get(key), str):
                value = raw  # --dataset=123 is the string '123'
            overrides[key] = checked(key, value, arg)
        scope.update(overrides)
    scope['_overridden'] = overrides

    if int(os.environ.get('RANK', 0)) == 0:  # torchrun: print once, not once per process
        for key, value in overrides.items():
            print(f"Overriding: {key} = {value!r}")


_configure(globals())
