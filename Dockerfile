# ratelimit-sidecar's container image: built on Debian 12, run on debian:12-slim as uid 10001.
#   docker build -t registry.example.com/ratelimit-sidecar:0.1.0 .
# The Kubernetes manifests in k8s/ expect this user, entrypoint and admin port.

FROM debian:12 AS build
# The build packages of scripts/install-deps.sh; its test-only ones are left out.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      cmake ninja-build g++ pkg-config \
      libuv1-dev libpq-dev libmicrohttpd-dev libssl-dev \
      flatbuffers-compiler libflatbuffers-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY CMakeLists.txt ./
COPY schema/ schema/
COPY sidecar/ sidecar/
COPY client/ client/
RUN cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DRATELIMIT_TESTS=OFF \
 && cmake --build build --target ratelimit-sidecar ratelimit-cli \
 && strip --strip-debug build/bin/ratelimit-sidecar build/bin/ratelimit-cli

FROM debian:12-slim
LABEL org.opencontainers.image.title="ratelimit-sidecar" \
      org.opencontainers.image.version="0.1.0"
# Only the shared libraries the binaries link (ldd build/bin/ratelimit-sidecar); libc6,
# libstdc++6 and libgcc-s1 are already in the base image.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libuv1 libpq5 libssl3 libmicrohttpd12 \
 && rm -rf /var/lib/apt/lists/*
# A fixed uid/gid, which the manifests' runAsUser and runAsGroup repeat; the socket directory
# belongs to it for runs without a mounted volume.
RUN groupadd --gid 10001 ratelimit \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin ratelimit \
 && mkdir -p /var/run/ratelimit \
 && chown 10001:10001 /var/run/ratelimit
COPY --from=build /src/build/bin/ratelimit-sidecar /src/build/bin/ratelimit-cli /usr/local/bin/
# RATE_LIMIT_SOCKET keeps its default, /var/run/ratelimit/ratelimit.sock.
ENV RATE_LIMIT_ADMIN_ADDR=0.0.0.0:9464
EXPOSE 9464
USER 10001:10001
ENTRYPOINT ["/usr/local/bin/ratelimit-sidecar"]
