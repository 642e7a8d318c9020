"""Files that readers see whole or not at all."""
import os
import tempfile
from pathlib import Path


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Replace ``path`` by ``text`` so that readers see the old or new file, never half."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', dir=path.parent)
    except OSError as err:
        raise OSError(err.errno, f'cannot write {path} ({err.strerror}): make {path.parent} '
                      'writable, then run again with --resume') from err
    try:
        with os.fdopen(fd, 'w') as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        raise OSError(err.errno, f'cannot write {path} ({err.strerror}); the previous '
                      'version is untouched: free space or fix permissions, then run again '
                      'with --resume') from err
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
