"""A real Label Studio server on 127.0.0.1 for tests, with a small API client.

Label Studio lives in its own virtual environment (it pins Django and many
other packages that must not meet ours): ``tools/install_label_studio.sh``
makes it at ``~/.cache/mmal/labelstudio-venv``; ``MMAL_LABEL_STUDIO`` may name
another one (the venv folder or its ``label-studio`` executable).

Usage::

    with LabelStudioServer(doc_root) as ls:
        project = ls.client.create_project(CONFIG_XML)
        ids = ls.client.import_tasks(project, tasks)
        other = ls.create_user('second@example.com')
        ls.client.annotate(ids[0], result)             # as the admin
        ls.client_for(other).annotate(ids[0], result)  # as the second user
        exported = ls.client.export(project)

Each server gets a throwaway data folder (sqlite database, media) and serves
the images under ``doc_root`` as ``/data/local-files/?d=<path under doc_root>``
(:meth:`LabelStudioServer.image_url`). The server is stopped, with anything it
started, when the ``with`` block ends, whatever happens inside it.

A new database takes Label Studio ~20 s to migrate, so the first server of a
venv migrates one into ``<venv>/mmal-database/`` and every server after it
starts from a copy (~3 s).

As a script::

    python tests/labelstudio_server.py prepare        # migrate the database copy
    python -m tests.labelstudio_server samples tests/data   # re-record the exports
"""
import atexit
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from http.cookiejar import CookieJar
from pathlib import Path

DEFAULT_VENV = Path.home() / '.cache' / 'mmal' / 'labelstudio-venv'
DATABASE_FILE = 'label_studio.sqlite3'
ADMIN_EMAIL = 'admin@example.com'
ADMIN_PASSWORD = 'mmal-admin-password'
ADMIN_TOKEN = 'mmal-admin-token-0123456789'
# Label Studio reads these (bare and with LABEL_STUDIO_ / HEARTEX_ prefixes);
# a developer's shell may set some of them (HOST, PORT, USERNAME ...) for other
# reasons, so the server starts from an environment without them.
_LS_BARE_ENV = ('HOST', 'PORT', 'USERNAME', 'PASSWORD', 'USER_TOKEN', 'DATABASE_NAME',
                'DJANGO_DB', 'DEBUG', 'LOG_LEVEL', 'SECRET_KEY')


def label_studio_executable() -> Path | None:
    """The ``label-studio`` command of the installed venv, or None if absent."""
    configured = os.environ.get('MMAL_LABEL_STUDIO')
    root = Path(configured).expanduser() if configured else DEFAULT_VENV
    exe = root if root.is_file() else root / 'bin' / 'label-studio'
    return exe if exe.is_file() and os.access(exe, os.X_OK) else None


def require_label_studio() -> Path:
    """The ``label-studio`` command, or skip the calling test when not installed."""
    import pytest
    exe = label_studio_executable()
    if exe is None:
        pytest.skip('Label Studio is not installed: run tools/install_label_studio.sh '
                    '(or point MMAL_LABEL_STUDIO at its venv)')
    return exe


class LabelStudioError(RuntimeError):
    """The server did not start, or answered a request with an error."""


def _environment(data_dir: Path, doc_root: Path | None = None) -> dict:
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(('LABEL_STUDIO_', 'HEARTEX_')) and key not in _LS_BARE_ENV}
    env.update({
        'LABEL_STUDIO_BASE_DATA_DIR': str(data_dir),
        # No calls to the internet: there is none in CI.
        'LATEST_VERSION_CHECK': 'false',
        'COLLECT_ANALYTICS': 'false',
        'LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN': 'true',
        'DJANGO_DB': 'sqlite',
    })
    if doc_root is not None:
        env.update({'LOCAL_FILES_SERVING_ENABLED': 'true',
                    'LOCAL_FILES_DOCUMENT_ROOT': str(doc_root)})
    return env


def _admin_arguments(data_dir: Path) -> list[str]:
    # --enable-legacy-api-token: since 1.18 a new organization accepts only JWT
    # personal tokens unless told otherwise; ``Token <key>`` is simpler here.
    return ['--data-dir', str(data_dir), '--username', ADMIN_EMAIL, '--password',
            ADMIN_PASSWORD, '--user-token', ADMIN_TOKEN, '--enable-legacy-api-token']


def prepared_database(exe: Path, timeout: float = 300) -> Path | None:
    """A migrated database with the admin user, kept in the venv; made when missing.

    Returns None where the venv is read-only (each server then migrates its
    own database, which is slower but the same).
    """
    venv = exe.resolve().parent.parent
    target = venv / 'mmal-database' / DATABASE_FILE
    if target.is_file():
        return target
    try:
        target.parent.mkdir(exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix='init-', dir=target.parent))
    except OSError:
        return None
    try:
        done = subprocess.run([str(exe), 'init', '--quiet', *_admin_arguments(scratch)],
                              env=_environment(scratch), stdin=subprocess.DEVNULL,
                              capture_output=True, timeout=timeout, start_new_session=True)
        if done.returncode != 0 or not (scratch / DATABASE_FILE).is_file():
            output = (done.stdout + done.stderr).decode(errors='replace')[-4000:]
            raise LabelStudioError(f'label-studio init failed ({done.returncode}):\n{output}')
        # Atomic, so that two test runs at once never copy a half-written file.
        os.replace(scratch / DATABASE_FILE, target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def _die_with_parent() -> None:
    # A test run killed outright runs no atexit hook: let Linux end the server then.
    if sys.platform.startswith('linux'):
        import ctypes
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


class LabelStudioClient:
    """The few Label Studio REST calls MMAL needs, as one user (legacy token auth).

    Args:
        url (str): The server, e.g. ``http://127.0.0.1:8080``.
        token (str): The user's API token (``Authorization: Token <token>``).
        timeout (float): Seconds each request may take.
    """

    def __init__(self, url: str, token: str, timeout: float = 60):
        self.url = url.rstrip('/')
        self.token = token
        self.timeout = timeout

    def request(self, method: str, path: str, body=None, params: dict | None = None):
        """One JSON request; returns the decoded answer (None when empty)."""
        url = self.url + path
        if params:
            url += '?' + urllib.parse.urlencode(params)
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, method=method)
        req.add_header('Authorization', f'Token {self.token}')
        req.add_header('Accept', 'application/json')
        if data is not None:
            req.add_header('Content-Type', 'application/json')
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as response:
                payload = response.read()
        except urllib.error.HTTPError as err:
            detail = err.read().decode(errors='replace')[:2000]
            raise LabelStudioError(f'{method} {path} answered {err.code}: {detail}') from err
        return json.loads(payload) if payload else None

    def create_project(self, label_config: str, title: str = 'mmal',
                       storage_root: str | Path | None = None, **fields) -> int:
        """Creates a project and returns its id.

        Args:
            label_config (str): The labeling interface XML.
            title (str): The project's title.
            storage_root (str | Path, optional): A folder *inside* the
                server's document root (not the root itself: Label Studio
                refuses that) whose files the project's tasks may show;
                Label Studio only serves a local file to users of a project
                with a local storage that contains it.
            **fields: Other project fields (e.g. ``maximum_annotations=2``).
        """
        project = self.request('POST', '/api/projects/',
                               {'title': title, 'label_config': label_config, **fields})
        if storage_root is not None:
            self.request('POST', '/api/storages/localfiles/', {
                'project': project['id'], 'title': 'images', 'path': str(storage_root),
                'use_blob_urls': False})
        return project['id']

    def import_tasks(self, project: int, tasks: list[dict]) -> list[int]:
        """Imports Label Studio task JSON (with ``predictions``); returns the new task ids."""
        answer = self.request('POST', f'/api/projects/{project}/import', tasks,
                              params={'return_task_ids': 'true'})
        return answer['task_ids']

    def tasks(self, project: int) -> list[dict]:
        """All tasks of a project, in id order."""
        tasks, page = [], 1
        while True:
            answer = self.request('GET', '/api/tasks/', params={
                'project': project, 'page': page, 'page_size': 100, 'fields': 'all'})
            tasks.extend(answer['tasks'])
            if len(tasks) >= answer['total'] or not answer['tasks']:
                return sorted(tasks, key=lambda task: task['id'])
            page += 1

    def annotate(self, task_id: int, result: list[dict], was_cancelled: bool = False,
                 lead_time: float = 1.0) -> dict:
        """Submits this user's annotation of a task (``was_cancelled``: skipped)."""
        return self.request('POST', f'/api/tasks/{task_id}/annotations/', {
            'result': result, 'was_cancelled': was_cancelled, 'lead_time': lead_time})

    def export(self, project: int, all_tasks: bool = True) -> list[dict]:
        """The project's JSON export, as the Label Studio UI's Export button gives it.

        Args:
            all_tasks (bool): Also export tasks nobody labeled yet (the UI
                exports only labeled ones).
        """
        return self.request('GET', f'/api/projects/{project}/export', params={
            'exportType': 'JSON', 'download_all_tasks': str(all_tasks).lower()})

    def whoami(self) -> dict:
        """This token's user."""
        return self.request('GET', '/api/current-user/whoami')

    def users(self) -> dict[int, str]:
        """The emails of the organization's users by id (exports name users by id)."""
        return {user['id']: user['email'] for user in self.request('GET', '/api/users/')}


class LabelStudioServer:
    """Runs ``label-studio start`` on 127.0.0.1 in a throwaway data folder.

    Args:
        doc_root (str | Path): Folder whose files tasks show through
            ``/data/local-files/?d=<relative path>``.
        port (int, optional): Port to listen on; a free one by default.
        data_dir (str | Path, optional): Where the database goes; a new
            temporary folder (deleted at exit) by default.
        start_timeout (float): Seconds to wait for the server to answer
            ``/health`` (the venv's first server migrates the database copy
            before this wait starts: ~20 s once, up to 300 s).
        request_timeout (float): Seconds each API request may take.
    """

    def __init__(self, doc_root, port: int | None = None, data_dir=None,
                 start_timeout: float = 180, request_timeout: float = 60):
        self.doc_root = Path(doc_root).resolve()
        self.port = port or _free_port()
        self.url = f'http://127.0.0.1:{self.port}'
        self.start_timeout = start_timeout
        self.request_timeout = request_timeout
        self._own_data_dir = data_dir is None
        self.data_dir = Path(data_dir or tempfile.mkdtemp(prefix='mmal-labelstudio-'))
        self.log_path = self.data_dir / 'server.log'
        self.admin_token = ADMIN_TOKEN
        self.tokens: dict[str, str] = {ADMIN_EMAIL: ADMIN_TOKEN}
        self.client = LabelStudioClient(self.url, ADMIN_TOKEN, request_timeout)
        self._process: subprocess.Popen | None = None

    # ---------------------------------------------------------------- lifecycle
    def __enter__(self) -> 'LabelStudioServer':
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def start(self) -> None:
        """Starts the server and waits until it answers; raises if it does not."""
        try:
            self._start()
            self._wait_until_healthy()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        exe = label_studio_executable()
        if exe is None:
            raise LabelStudioError('Label Studio is not installed: run '
                                   'tools/install_label_studio.sh or set MMAL_LABEL_STUDIO')
        if not self.doc_root.is_dir():
            raise LabelStudioError(f'doc_root {self.doc_root} is not a folder')
        self.data_dir.mkdir(parents=True, exist_ok=True)
        database = prepared_database(exe)
        if database is not None and not (self.data_dir / DATABASE_FILE).exists():
            shutil.copyfile(database, self.data_dir / DATABASE_FILE)
        command = [str(exe), 'start', '--no-browser', '--internal-host', '127.0.0.1',
                   '--port', str(self.port), *_admin_arguments(self.data_dir)]
        atexit.register(self.stop)
        with open(self.log_path, 'wb') as log:
            # A new session: stop() ends the server and anything it started.
            self._process = subprocess.Popen(
                command, env=_environment(self.data_dir, self.doc_root), stdout=log,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                preexec_fn=_die_with_parent)

    def stop(self) -> None:
        """Ends the server's process group (TERM, then KILL) and removes its data."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            self._signal_group(process, signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._signal_group(process, signal.SIGKILL)
                process.wait(timeout=15)
        if process is not None:
            # The group may hold children that outlived the server itself.
            self._signal_group(process, signal.SIGKILL)
        if self._own_data_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    @staticmethod
    def _signal_group(process: subprocess.Popen, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, sig)

    def _wait_until_healthy(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise LabelStudioError(
                    f'label-studio exited with {self._process.returncode}:\n{self.log_tail()}')
            if self._answers_health() and self._answers_token():
                return
            time.sleep(0.5)
        raise LabelStudioError(f'label-studio did not answer {self.url}/health within '
                               f'{self.start_timeout:.0f} s:\n{self.log_tail()}')

    def _answers_health(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + '/health', timeout=5) as response:
                return json.loads(response.read()).get('status') == 'UP'
        except (OSError, ValueError):
            return False

    def _answers_token(self) -> bool:
        # Label Studio moves to the next port when ours is taken: make sure the
        # server answering is ours (it knows our admin token).
        try:
            return self.client.whoami()['email'] == ADMIN_EMAIL
        except (OSError, LabelStudioError):
            return False

    def log_tail(self, chars: int = 4000) -> str:
        """The end of the server's log (for error messages)."""
        try:
            return self.log_path.read_text(errors='replace')[-chars:]
        except OSError:
            return '(no log)'

    # ---------------------------------------------------------------- helpers
    def image_url(self, path) -> str:
        """The task URL of a file under ``doc_root`` (absolute or relative path)."""
        relative = Path(path)
        if relative.is_absolute():
            relative = relative.resolve().relative_to(self.doc_root)
        return '/data/local-files/?d=' + urllib.parse.quote(relative.as_posix())

    def create_user(self, email: str, password: str = 'mmal-annotator-password') -> str:
        """Signs a new annotator up, as a person would, and returns their API token.

        The sign-up page puts the user in the (only) organization, so they see
        its projects; their token is read through their own session.
        """
        jar = CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        signup = self.url + '/user/signup/'
        opener.open(signup, timeout=self.request_timeout).read()
        csrf = next((cookie.value for cookie in jar if cookie.name == 'csrftoken'), None)
        if csrf is None:
            raise LabelStudioError(f'{signup} set no csrftoken cookie')
        form = urllib.parse.urlencode({'email': email, 'password': password,
                                       'csrfmiddlewaretoken': csrf}).encode()
        request = urllib.request.Request(signup, data=form, method='POST')
        request.add_header('Referer', signup)
        page = opener.open(request, timeout=self.request_timeout).read().decode(errors='replace')
        request = urllib.request.Request(self.url + '/api/current-user/token')
        request.add_header('Accept', 'application/json')
        try:
            with opener.open(request, timeout=self.request_timeout) as response:
                token = json.loads(response.read())['token']
        except (urllib.error.HTTPError, ValueError, KeyError) as err:
            errors = re.findall(r'class="[^"]*error[^"]*"[^>]*>([^<]+)<', page)
            raise LabelStudioError(f'signing up {email} failed: {errors or err}') from err
        self.tokens[email] = token
        return token

    def client_for(self, token: str) -> LabelStudioClient:
        """A client acting as the user with this token."""
        return LabelStudioClient(self.url, token, self.request_timeout)


# ---------------------------------------------------------------- recorded exports
def _region(task, from_name: str, kind: str, region_id: str, value: dict) -> dict:
    return {'id': region_id, 'from_name': from_name, 'to_name': 'image', 'type': kind,
            'original_width': task.width, 'original_height': task.height,
            'image_rotation': 0, 'value': value}


def _box_region(task, region_id: str, label: str, x1, y1, x2, y2,
                from_name: str = 'label') -> dict:
    """A person's box as the Label Studio editor submits it (percent of the image)."""
    value = {'x': 100 * x1 / task.width, 'y': 100 * y1 / task.height,
             'width': 100 * (x2 - x1) / task.width, 'height': 100 * (y2 - y1) / task.height,
             'rotation': 0, 'rectanglelabels': [label]}
    return _region(task, from_name, 'rectanglelabels', region_id, value)


def _point_region(task, region_id: str, joint: str, x, y) -> dict:
    value = {'x': 100 * x / task.width, 'y': 100 * y / task.height, 'width': 0.5,
             'keypointlabels': [joint]}
    return _region(task, 'keypoints', 'keypointlabels', region_id, value)


def _record(ls: 'LabelStudioServer', tasks, space, batch_dir: Path, annotate) -> list[dict]:
    """Imports a batch as MMAL writes it, lets two people label it, returns the export."""
    import cv2
    import numpy as np

    from mmal.annotation.formats import labelstudio
    pool = ls.doc_root / 'pool'
    for task in tasks:
        image = pool / task.image
        image.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(image), np.full((task.height, task.width, 3), 127, np.uint8))
    labelstudio.write_tasks(tasks, space, batch_dir,
                            image_url=lambda task: ls.image_url(pool / task.image))
    config = (batch_dir / labelstudio.CONFIG_FILE).read_text()
    project = ls.client.create_project(config, title=space.task, storage_root=pool)
    ids = ls.client.import_tasks(
        project, json.loads((batch_dir / labelstudio.TASKS_FILE).read_text()))
    second = ls.client_for(ls.create_user(f'second-{space.task}@example.com'))
    annotate(dict(zip(ids, tasks)), ls.client, second)
    return ls.client.export(project)


def record_samples(out_dir) -> list[Path]:
    """Records real exports of a detection and a pose batch (labeled by two users).

    Detection: the first image labeled by both users (they disagree on one
    box), the second by the admin and skipped by the other user, the third
    not labeled. Pose: two people of one image; the first labeled by both,
    the second by the admin only.
    """
    from mmal.annotation.records import Box, Keypoint, Labels, LabelSpace, Task
    from mmal.datasets.mpii_format import MPII_JOINTS
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    detection = LabelSpace('detection', ('bottle', 'boat', 'car', 'sheep', 'tvmonitor'))
    pose = LabelSpace('pose', MPII_JOINTS)
    det_tasks = [
        Task('VOC2007/JPEGImages/000005', 'VOC2007/JPEGImages/000005.png', 80, 60, 0.9, 1,
             prediction=Labels('VOC2007/JPEGImages/000005', 'model',
                               (Box('car', 8, 6, 40, 30, 0.8), Box('boat', 50, 20, 70, 50, 0.4)))),
        Task('VOC2007/JPEGImages/000007', 'VOC2007/JPEGImages/000007.png', 40, 50, 0.5, 2,
             prediction=Labels('VOC2007/JPEGImages/000007', 'model',
                               (Box('sheep', 4, 5, 30, 40, 0.6),))),
        Task('VOC2007/JPEGImages/000009', 'VOC2007/JPEGImages/000009.png', 64, 48, 0.2, 3),
    ]

    def label_boxes(tasks_by_id, admin, second):
        (first, t1), (other, t2), _ = tasks_by_id.items()
        admin.annotate(first, [_box_region(t1, 'a1', 'car', 8, 6, 40, 30),
                               _box_region(t1, 'a2', 'boat', 50, 20, 70, 50)])
        second.annotate(first, [_box_region(t1, 'b1', 'car', 9, 7, 41, 29),
                                _box_region(t1, 'b2', 'bottle', 51, 21, 69, 49)])
        admin.annotate(other, [_box_region(t2, 'a1', 'sheep', 3, 5, 31, 42)])
        second.annotate(other, [], was_cancelled=True)

    person_a = Box('person', 10, 5, 50, 90)
    person_b = Box('person', 60, 10, 95, 88)
    joints = {'head_top': (30, 8), 'upper_neck': (30, 20), 'left_wrist': (45, 50),
              'right_wrist': (14, 52), 'pelvis': (30, 55)}
    pose_tasks = [
        Task('images/015601864', 'images/015601864.png', 100, 100, 0.7, 1, person_box=person_a,
             prediction=Labels('images/015601864', 'model', keypoints=tuple(
                 Keypoint(name, x, y) for name, (x, y) in joints.items()))),
        Task('images/015601864#1', 'images/015601864.png', 100, 100, 0.4, 2,
             person_box=person_b),
    ]

    def label_joints(tasks_by_id, admin, second):
        (first, t1), (other, t2) = tasks_by_id.items()
        # The editor keeps the pre-annotated person box in what it submits.
        guide = _box_region(t1, 'person', 'person', 10, 5, 50, 90, from_name='person')
        admin.annotate(first, [guide] + [_point_region(t1, f'a{i}', name, x, y)
                                         for i, (name, (x, y)) in enumerate(joints.items())])
        second.annotate(first, [_point_region(t1, f'b{i}', name, x + 1, y - 1)
                                for i, (name, (x, y)) in enumerate(joints.items()) if i != 2])
        admin.annotate(other, [_point_region(t2, 'a0', 'head_top', 78, 12),
                               _point_region(t2, 'a1', 'pelvis', 77, 50)])

    written = []
    with tempfile.TemporaryDirectory() as scratch, LabelStudioServer(Path(scratch)) as ls:
        for name, tasks, space, annotate in (
                ('labelstudio_export_sample.json', det_tasks, detection, label_boxes),
                ('labelstudio_export_keypoints_sample.json', pose_tasks, pose, label_joints)):
            exported = _record(ls, tasks, space, Path(scratch) / f'batch-{space.task}', annotate)
            path = out_dir / name
            path.write_text(json.dumps(exported, indent=1) + '\n')
            written.append(path)
    return written


def main(argv: list[str]) -> int:
    usage = ('usage: labelstudio_server.py prepare | samples OUT_DIR\n'
             '  prepare: migrate the database copy servers start from\n'
             '  samples: record real exports into OUT_DIR (run as a module of the repo)')
    if argv[:1] == ['prepare'] and len(argv) == 1:
        exe = label_studio_executable()
        if exe is None:
            print('Label Studio is not installed: run tools/install_label_studio.sh',
                  file=sys.stderr)
            return 1
        print(prepared_database(exe) or 'the venv is read-only: no database copy kept')
        return 0
    if argv[:1] == ['samples'] and len(argv) == 2:
        for path in record_samples(argv[1]):
            print(path)
        return 0
    print(usage, file=sys.stderr)
    return 2


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
