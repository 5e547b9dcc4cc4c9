from setuptools import find_packages, setup

setup(
    name="minipanda",
    version="0.1.0",
    description="A harvester-first, PanDA-compatible workload management system for one VM or a small site",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    packages=find_packages(include=["minipanda", "minipanda.*", "harvester", "harvester.*", "pilot", "pilot.*",
                                    "queueconfig", "queueconfig.*", "testbed", "testbed.*"]),
    package_data={"minipanda.monitor": ["templates/*.html", "templates/*.css"], "minipanda": ["trf/runGen-*"]},
    install_requires=[
        "peewee>=4.0",
        "bottle>=0.13",
        "granian>=2.8,<2.9",  # minipanda/server/http.py runs its WSGI worker in-process (its internal API)
        "psutil>=5.9",
        "paramiko>=3.4",
        "htcondor>=24.0",
        "PyJWT>=2.8",
        "requests>=2.31",
        "pydantic>=2.7,<3",
        "orjson>=3.9",
        "zlib-ng>=0.5",  # minipanda/core/filestore.py: the store's adler32 of a MiB 0.05 ms against zlib's 0.4  # minipanda/api/wire.py: reply bodies (a bulk getJob of 100 jobs: 0.3 ms against 4 ms)
        "PyYAML>=6.0",
        "Jinja2>=3.1",
        "prometheus_client>=0.20",
        "rich>=13",  # minipanda testbed: the progress bar
        # minipanda/server/http.py: the loop that reads bodies and hands replies back (server CPU per request 0.79x
        # of asyncio's in bench/http_layer.py); asyncio's own loop where it is not installed
        "uvloop>=0.21; sys_platform != 'win32'",
    ],
    extras_require={
        "postgres": ["psycopg2-binary>=2.9"],
        # bench/peers.py's peers, measured beside minipanda; never needed by the product
        "bench": ["parsl>=2026.1", "dask>=2026.1", "distributed>=2026.1", "hyperqueue>=0.27", "py-spy>=0.4"],
        # pytest below 9.2: pytest-xdist 3.8's --dist loadgroup (README's test command) names a test's group by
        # appending it to the node id, which pytest 9.2 ignores: every file's tests would be spread over the
        # processes, module-scoped daemons and all (tests/test_xdist_groups.py fails then).
        "test": ["pytest>=8,<9.2", "pytest-timeout>=2.3", "pytest-xdist>=3.5", "psycopg2-binary>=2.9",
                 "panda-client==2.2.0", "hypothesis>=6.100", "selenium>=4.15"],
    },
    entry_points={
        "console_scripts": [
            "minipanda=minipanda.cli:main",
            "harvester=harvester.cli:main",
            "pilot=pilot.cli:main",
            "queueconfig=queueconfig.cli:main",
        ],
    },
)
