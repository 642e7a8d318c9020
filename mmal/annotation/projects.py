"""Where a serving queue pushes tasks and reads finished labels from.

Both kinds do two things: :meth:`push` tasks, and give :meth:`exports` of
what people finished (files in a format ingest reads). Which tasks are
still open is the queue's to know (:mod:`.queue`).

- :class:`LabelStudioProject`: a project of a running Label Studio, through
  its HTTP API (``Authorization: Token ...``).
- :class:`FolderProject`: an outbox of task files and an inbox of exports,
  for tools reached by hand (CVAT, COCO tools) and for tests.
"""
import json
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from ..utils.atomic import atomic_write_text
from .batch import write_batch
from .formats import labelstudio
from .records import LabelSpace, Task
from .settings import AnnotationSettings


class LabelStudioProject:
    """A Label Studio project, over its HTTP API.

    Args:
        url (str): The server, e.g. ``http://localhost:8080``.
        token (str): An API token (Account & Settings -> Access Token).
        project (int): The project id.
        timeout (float): Seconds for each request.
    """

    def __init__(self, url: str, token: str, project: int, timeout: float = 30.0) -> None:
        self.url, self.token, self.project, self.timeout = url.rstrip('/'), token, project, timeout

    def push(self, tasks: Sequence[Task], space: LabelSpace,
             settings: AnnotationSettings) -> None:
        image_url = labelstudio.local_file_url(settings.image_url_prefix)
        items = [labelstudio.import_task(t, space, image_url) for t in tasks]
        self._request('POST', f'/api/projects/{self.project}/import', items)

    def exports(self, folder: Path) -> list[Path]:
        """The project's JSON export, saved into ``folder``."""
        exported = self._request('GET', f'/api/projects/{self.project}/export?exportType=JSON')
        path = Path(folder) / 'labelstudio_export.json'
        atomic_write_text(path, json.dumps(exported))
        return [path]

    def _request(self, method: str, path: str, body=None):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path, data=data, method=method,
            headers={'Authorization': f'Token {self.token}', 'Content-Type': 'application/json'})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read() or b'null')
        except urllib.error.HTTPError as err:
            raise ConnectionError(f'Label Studio at {self.url} answered {method} {path} with '
                                  f'{err.code}: {err.read()[:300]!r}; check the project id and '
                                  'the token') from err
        except urllib.error.URLError as err:
            raise ConnectionError(f'Label Studio at {self.url} cannot be reached ({err.reason})'
                                  '; start it, or give --url of the running server') from err


class FolderProject:
    """Tasks to ``outbox/push_NNNN/`` in the configured formats; exports from ``inbox/``.

    People (or a script) put their tools' exports into the inbox; every
    export there is read at each step (ingesting again changes nothing).
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.outbox, self.inbox = self.folder / 'outbox', self.folder / 'inbox'
        self.inbox.mkdir(parents=True, exist_ok=True)
        self.outbox.mkdir(parents=True, exist_ok=True)

    def push(self, tasks: Sequence[Task], space: LabelSpace,
             settings: AnnotationSettings) -> None:
        numbers = [int(p.name.split('_')[1]) for p in self.outbox.glob('push_*')]
        number = max(numbers, default=-1) + 1  # never over an existing push
        write_batch(self.outbox / f'push_{number:04d}', tasks, space, settings,
                    strategy='queue')

    def exports(self, folder: Path | None = None) -> list[Path]:
        return sorted(p for p in self.inbox.iterdir() if p.is_file())
