"""MMAL's packages form layers (``LAYERS``, drawn in docs/design.md): a
package imports only packages of lower layers, imports inside functions
included, so no package reaches up and no two packages import each other.
"""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / 'mmal'

#: Lowest first. A package may import packages of lower layers only.
LAYERS = (
    ('utils', 'registry'),
    ('datasets', 'evaluation', 'hooks', 'models'),
    ('scoring',),
    ('strategies',),
    ('annotation',),
    ('loop',),
    ('service', 'compare'),
)
LEVEL = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def package_of(module: str) -> str | None:
    """``'mmal.loop.human'`` -> ``'loop'``; None outside MMAL or for ``mmal`` itself."""
    parts = module.split('.')
    return parts[1] if parts[0] == 'mmal' and len(parts) > 1 else None


def imported_modules(path: Path) -> list[tuple[str, int]]:
    """Every ``mmal.*`` module the file imports, absolute or relative, anywhere in it."""
    module = '.'.join(path.relative_to(ROOT.parent).with_suffix('').parts)
    package = module.split('.') if path.name == '__init__.py' else module.split('.')[:-1]
    if path.name == '__init__.py':
        package = package[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                target = '.'.join(base + ([node.module] if node.module else []))
                if node.module is None:  # `from . import x`: each name is a module
                    found += [(f'{target}.{alias.name}', node.lineno) for alias in node.names]
                    continue
            else:
                target = node.module
            found.append((target, node.lineno))
    return [(m, line) for m, line in found if m == 'mmal' or m.startswith('mmal.')]


def package_imports() -> list[tuple[str, str, str]]:
    """``(importing package, imported package, 'file:line')`` across packages."""
    edges = []
    for path in sorted(ROOT.rglob('*.py')):
        own = package_of('.'.join(path.relative_to(ROOT.parent).with_suffix('').parts))
        if own is None or own == '__init__':  # mmal/__init__.py imports everything
            continue
        for module, line in imported_modules(path):
            other = package_of(module)
            if other is not None and other != own:
                edges.append((own, other, f'{path.relative_to(ROOT.parent)}:{line}'))
    return edges


def test_every_package_has_a_layer():
    packages = {p.name for p in ROOT.iterdir() if (p / '__init__.py').exists()}
    packages |= {p.stem for p in ROOT.glob('*.py') if p.stem != '__init__'}
    assert packages == set(LEVEL), (
        f'packages without a layer: {sorted(packages - set(LEVEL))}; layers naming no '
        f'package: {sorted(set(LEVEL) - packages)}')


def test_no_package_imports_upward_or_sideways():
    bad = [f'{where}: {own} (layer {LEVEL[own]}) imports {other} (layer {LEVEL[other]})'
           for own, other, where in package_imports() if LEVEL[other] >= LEVEL[own]]
    assert not bad, 'imports against the layering:\n' + '\n'.join(bad)


def test_the_reader_sees_both_kinds_of_import(tmp_path, monkeypatch):
    """The reader finds relative, absolute and in-function imports (else the test above
    could pass with the imports unseen)."""
    fake = tmp_path / 'mmal' / 'utils'
    fake.mkdir(parents=True)
    (fake / 'x.py').write_text('from ..loop import state\nimport mmal.service.query\n'
                               'def f():\n    from ..compare.report import Run\n')
    monkeypatch.setattr(f'{__name__}.ROOT', tmp_path / 'mmal')
    found = {package_of(m) for m, _ in imported_modules(fake / 'x.py')}
    assert found == {'loop', 'service', 'compare'}


@pytest.mark.parametrize('module', ['mmal.annotation', 'mmal.utils', 'mmal.datasets'])
def test_lower_packages_import_without_the_loop(module):
    """Importing a lower package does not pull the loop in (a subprocess: a clean
    ``sys.modules``)."""
    import subprocess
    import sys
    code = (f'import sys, {module}; loaded = [m for m in sys.modules if m.startswith('
            '("mmal.loop", "mmal.service", "mmal.compare"))]; print(loaded); '
            'sys.exit(1 if loaded else 0)')
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
