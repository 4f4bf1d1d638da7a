# Image for a swarm node (docs/operations.md has the Docker and podman commands):
#   CPU: docker build -t swarm:cpu .
#   GPU: docker build -t swarm:gpu --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu126 .
#        and run it with the NVIDIA container runtime.
# BASE is any Debian-like image with Python 3.11+ (python3, venv): python:3.11-slim by default, or a local one
# built from Debian packages where no registry image can be pulled (tests/test_containers.py builds one).
ARG BASE=python:3.11-slim

# The project's dependency list alone, so that edits elsewhere in pyproject.toml (tool settings) keep the cached
# dependency layer below: a copied file is compared by content.
FROM ${BASE} AS requirements
COPY pyproject.toml /src/
RUN python3 -c "import tomllib; print('\n'.join(tomllib.load(open('/src/pyproject.toml', 'rb'))['project']['dependencies']))" \
    > /requirements.txt

FROM ${BASE} AS build
# Where the pinned torch comes from: TORCH_INDEX replaces pip's index for that one package (PyTorch's CPU or CUDA
# wheels). Left empty, pip's default index is used, plus TORCH_FIND_LINKS: a folder of wheels mounted into the
# build (podman build --volume /opt/wheels:/opt/wheels:ro ...), e.g. where a CPU build lies on disk.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ARG TORCH_FIND_LINKS=
# libp2p pulls fastecdsa, which builds from source (gcc, GMP, the Python headers: the slim image has its own).
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential libgmp-dev \
       $(python3 -c 'import os, sysconfig; print("" if os.path.exists(sysconfig.get_paths()["include"] + "/Python.h") else "python3-dev")') \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY constraints.txt /src/
RUN pip install --no-cache-dir ${TORCH_INDEX:+--index-url "$TORCH_INDEX"} \
        ${TORCH_FIND_LINKS:+--find-links "$TORCH_FIND_LINKS"} "$(grep '^torch==' /src/constraints.txt)"
# The dependencies on their own, before any code: this layer, the slow one, is reused by builds that change only
# the code or the docs.
COPY --from=requirements /requirements.txt /src/
RUN pip install --no-cache-dir -c /src/constraints.txt -r /src/requirements.txt
COPY pyproject.toml README.md /src/
COPY crypto /src/crypto
COPY consensus /src/consensus
COPY swarm /src/swarm
COPY cli /src/cli
COPY bench /src/bench
RUN pip wheel --no-cache-dir --no-deps -w /wheels /src

FROM ${BASE}
RUN useradd --create-home --uid 10001 swarm \
    && mkdir -p /cluster /data && chown swarm:swarm /cluster /data
# The virtual environment without the project (unchanged by code edits), then the project's wheel.
COPY --from=build /opt/venv /opt/venv
COPY --from=build /wheels /tmp/wheels
RUN /opt/venv/bin/pip install --no-cache-dir --no-index --no-deps /tmp/wheels/*.whl && rm -rf /tmp/wheels
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1
USER swarm
WORKDIR /home/swarm
# Mount points (docker-compose.yml names a volume for each): /cluster holds keys, genesis, configs and the API
# token (shared, written by the init service); /data this node's store and snapshots (one volume per node).
# No VOLUME instruction: it gave every container that mounts nothing there (init's /data, one-off `run`s) an
# anonymous volume that `down -v` does not remove.
EXPOSE 9000-9015 9100-9115
CMD ["swarm", "--help"]
