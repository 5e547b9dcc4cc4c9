"""The edge deployment on the hosts of tests/nethosts.py (no tests here): ``minipanda serve`` and ``harvester run``
on edge, a two-node Slurm and sshd on login, and the test's calls to the server through edge's network.

The server listens on edge's address of the edge <-> login link (10.231.0.1), so "a node cannot connect to it" is
a claim about a listening server, not about a loopback one; harvester reaches it there too. Everything a testbed
keeps (server and harvester homes, keys) is under the site's edge directory, which login and the nodes cannot see;
the workers directory and the queue's storage are under the site directory, which edge cannot see.
"""
import os

import requests

from harvesterhelp import QueueServer, Testbed, queue_config
from nethosts import EDGE_ADDRESS, LoginSshd, Site, TwoNodeSlurm


class EdgeSite:
    """The four hosts, Slurm and login's sshd, up; :meth:`close` stops and deletes everything they made."""

    def __init__(self, base):
        self.site = Site(base).up()
        try:
            self.slurm = TwoNodeSlurm(self.site).start()
            self.sshd = LoginSshd(self.site, {"SLURM_CONF": self.slurm.conf}).start()
        except BaseException:
            self.site.close()
            raise

    def workers(self, bed):
        """The worker directories of one testbed, on the site (each testbed counts its workers from 1)."""
        return os.path.join(self.site.site_dir, bed, "workers")

    def queue(self, bed, **over):
        """A push queue whose nodes have no network: Slurm on login over SSH, the testbed ``bed``'s worker
        directories on the site."""
        spec = {"mode": "push", "wnconnectivity": "none", "batch": {"system": "slurm", "partition": "debug"},
                "transport": self.sshd.queue_transport(workdir=self.workers(bed))}
        for key, value in over.items():
            spec[key] = {**spec.get(key, {}), **value} if isinstance(value, dict) else value
        return queue_config(**spec)

    def jobs(self, bed):
        """{Slurm job id: state} of the jobs slurmctld holds for testbed ``bed`` (by their comment: the access
        point)."""
        out = self.slurm.run("squeue", "--noheader", "--states=all", "--Format=JobID:|,State:|,Comment:|").stdout
        return {f[0]: f[1] for f in (line.split("|") for line in out.splitlines())
                if len(f) > 2 and f[2].startswith(self.workers(bed) + "/")}

    def close(self):
        self.site.close()


class EdgeServer(QueueServer):
    """``minipanda serve`` on edge, at edge's address of the link to login."""

    def __init__(self, home, db_url, queues_path, edge, extra=()):
        self.edge, self.extra = edge, list(extra)
        super().__init__(home, db_url, queues_path)

    def argv(self):
        self.url = f"http://{EDGE_ADDRESS}:{self.port}"
        return self.edge.argv([*super().argv(), "--host", EDGE_ADDRESS, *self.extra])

    def ping(self):
        self.edge.call(requests.get, self.url + "/api/v1/system/is_alive", timeout=5)


class EdgeTestbed(Testbed):
    """A :class:`harvesterhelp.Testbed` whose server and harvester run on edge (under ``base``, in edge's own
    directory) and whose queues reach the site over SSH."""

    def __init__(self, edge_site, name, queues, server_options=()):
        self.edge_site, self.server_options = edge_site, server_options
        super().__init__(os.path.join(edge_site.site.edge_dir, name), queues)

    @property
    def edge(self):
        return self.edge_site.site.edge

    def make_server(self, home, db_url):
        return EdgeServer(home, db_url, self.queues_path, self.edge, self.server_options)

    def v1(self, path, **params):
        reply = self.edge.call(requests.post, f"{self.server.url}/api/v1/{path}", json=params,
                               headers=self.server.headers(), timeout=60)
        reply.raise_for_status()
        body = reply.json()
        assert body["success"], body
        return body["data"]

    def get(self, path):
        """GET a path of the server with the admin token (e.g. ``/files/<scope>/<lfn>``)."""
        return self.edge.call(requests.get, f"{self.server.url}{path}", headers=self.server.headers(), timeout=60)

    def argv(self, *extra):
        return self.edge.argv(super().argv(*extra))

    def close(self):
        self.stop()
        self.edge_site.slurm.run("scancel", "--user=root")
        self.server.stop()
