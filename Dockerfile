# CPU image for a swarm node: docker build -t swarm:cpu .
# GPU image: docker build -t swarm:gpu --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu126 .
# and run it with the NVIDIA container runtime (docs/operations.md).
ARG PYTHON=python:3.11-slim

FROM ${PYTHON} AS build
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
# libp2p pulls fastecdsa, coincurve and miniupnpc, which may build from source.
RUN apt-get update && apt-get install -y --no-install-recommends build-essential libgmp-dev \
    && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# torch first, from the index that picks the build (CPU or CUDA); the pins in constraints.txt keep it there.
COPY constraints.txt /src/
RUN pip install --no-cache-dir --index-url ${TORCH_INDEX} "$(grep '^torch==' /src/constraints.txt)"
COPY pyproject.toml README.md /src/
COPY crypto /src/crypto
COPY consensus /src/consensus
COPY swarm /src/swarm
COPY cli /src/cli
COPY bench /src/bench
RUN pip install --no-cache-dir -c /src/constraints.txt /src

FROM ${PYTHON}
RUN useradd --create-home --uid 10001 swarm \
    && mkdir -p /cluster /data && chown swarm:swarm /cluster /data
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1
USER swarm
WORKDIR /home/swarm
# /cluster: keys, genesis, configs and the API token (shared, written by the init service);
# /data: this node's store and snapshots (one volume per node).
VOLUME ["/cluster", "/data"]
EXPOSE 9000-9015 9100-9115
CMD ["swarm", "--help"]
