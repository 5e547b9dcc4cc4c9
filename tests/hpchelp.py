"""An HPC site for harvester tests (no tests here): the two-node Slurm of tests/nethosts.py, with `minipanda serve`
and `harvester run` on its login host, as a site runs them on a login (or service) node next to the scheduler.

    login (server :25080 on 10.232.0.1, harvester, sbatch/srun/sacct)  --- bridge ---  node1, node2 (the pilots)

The pilots reach the server over the site's network (the bridge); the access points are on the site's shared
directory, which login and both nodes see. slurm.conf gives the pilots time to stop warmly (KillWait 30 s) and
keeps a job completion log that ``sacct --completion`` reads (accounting storage stays off: no slurmdbd).
This test process reaches the server through a thread that joined login's network namespace (``Host.call``).
"""
import os
import subprocess
import sys

import requests

from harvesterhelp import FAST, QueueServer, Testbed
from nethosts import LOGIN_SITE_ADDRESS, Site, TwoNodeSlurm
from slurmhelp import wait_until

SERVER_PORT = 25080  # login's own network namespace: the port is free there
SLURM_SETTINGS = {"KillWait": "30", "JobCompType": "jobcomp/filetxt"}


class HpcSite:
    """A :class:`nethosts.Site` with its two-node Slurm running; :meth:`close` stops everything by pid."""

    def __init__(self, base):
        self.site = Site(base).up()
        try:
            settings = dict(SLURM_SETTINGS, JobCompLoc=os.path.join(self.site.site_dir, "slurm", "jobcomp.txt"))
            self.slurm = TwoNodeSlurm(self.site, settings=settings).start()
        except BaseException:
            self.site.close()
            raise

    @property
    def shared(self):
        """The site's shared directory (login and the nodes see it at this path)."""
        return self.site.site_dir

    def run(self, *argv, timeout=60):
        """A Slurm client command on login."""
        return self.slurm.run(*argv, timeout=timeout)

    def close(self):
        self.site.close()


class LoginServer(QueueServer):
    """`minipanda serve` on login, listening on the address the nodes reach (the bridge)."""

    URL = f"http://{LOGIN_SITE_ADDRESS}:{SERVER_PORT}"

    def __init__(self, login, home, db_url, queues_path):
        self.login = login
        super().__init__(home, db_url, queues_path)
        self.url = self.URL

    def argv(self):
        argv = super().argv()
        argv[argv.index("--port") + 1] = str(SERVER_PORT)
        return self.login.argv(argv + ["--host", LOGIN_SITE_ADDRESS])

    def wait_until_answering(self, limit=60):
        def answers():
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.read_log()}")
            return self.login.call(_answers, self.URL)

        wait_until(answers, "the server on login", timeout=limit)


def _answers(url):
    try:
        return requests.get(url + "/api/v1/system/is_alive", timeout=5).ok
    except requests.RequestException:
        return False


class LoginBed(Testbed):
    """A :class:`harvesterhelp.Testbed` whose server and harvester run on login (the test talks to the server
    through login's network)."""

    def __init__(self, hpc, base, queues):
        self.hpc = hpc
        super().__init__(base, queues)

    def make_server(self, home, db_url):
        return LoginServer(self.hpc.site.login, home, db_url, self.queues_path)

    def v1(self, path, **params):
        def call():
            reply = requests.post(f"{self.server.url}/api/v1/{path}", json=params, headers=self.server.headers(),
                                  timeout=30)
            reply.raise_for_status()
            return reply.json()

        body = self.hpc.site.login.call(call)
        assert body["success"], body
        return body["data"]

    def get(self, path):
        """A GET on the server (monitor pages, /metrics) as text."""
        def call():
            reply = requests.get(f"{self.server.url}{path}", headers=self.server.headers(json_reply=False),
                                 timeout=30)
            reply.raise_for_status()
            return reply.text

        return self.hpc.site.login.call(call)

    def start(self, *settings):
        args = [arg for s in (*FAST, *settings) for arg in ("--setting", s)]
        self.daemon = subprocess.Popen(self.hpc.site.login.argv(self.argv(*args)), stdout=subprocess.DEVNULL,
                                       stderr=open(self.daemon_log, "ab"), env=self.hpc.slurm.env)
        return self.daemon

    def cli(self, *args):
        return subprocess.run([sys.executable, "-m", "harvester", *args, "--home", self.home], capture_output=True,
                              text=True, timeout=60)

    def kill_pilots(self):
        """Pilots run as Slurm jobs: the site's close() cancels them."""
