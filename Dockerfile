# Container images for sidecar. Two targets share one build:
#
#   docker build --target proxy -t sidecar:0.1.0 .        the proxy: FROM scratch, one static binary
#   docker build --target init  -t sidecar-init:0.1.0 .   `sidecar init-net apply` (needs iptables)
#   --build-arg SIDECAR_BACKENDS=mbedtls                   mbedTLS only: the smallest binary
#   --build-arg VERSION=0.1.0                              the org.opencontainers.image.version label
#
# A plain `docker build .` produces the proxy (the last stage). The build stage runs
# scripts/build-static, the same script the packaging tests run without a Docker engine.
# No certificate or key goes into any image: they are mounted at run time (see manifests/).

# The version the images are labelled with; keep it equal to project(... VERSION) in CMakeLists.txt
# (the binary reports that one): docker build --build-arg VERSION=0.1.0 ...
ARG VERSION=0.1.0

# Base images are pinned by their Debian point release, so a rebuild starts from the same release;
# move the tag forward (13.3, ...) on purpose, for security updates.
FROM debian:13.2-slim AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      build-essential cmake pkg-config libuv1-dev libmbedtls-dev libssl-dev libllhttp-dev \
      libyaml-cpp-dev libc-ares-dev libnghttp2-dev \
      catch2 ca-certificates \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# The TLS backends the binary carries: both (default; tls_backend mbedtls or openssl, 7.1 MB) or
# mbedtls (the smallest image, 3.1 MB): docker build --build-arg SIDECAR_BACKENDS=mbedtls .
# build-static reads it from the environment.
ARG SIDECAR_BACKENDS=both
# Configures with SIDECAR_STATIC, builds, runs the unit tests, checks the binary is static.
RUN scripts/build-static /src/build-static /out/sidecar

# The init container: runs once as root with NET_ADMIN and NET_RAW, installs the redirect, exits.
FROM debian:13.2-slim AS init
ARG VERSION
LABEL org.opencontainers.image.title="sidecar-init" \
      org.opencontainers.image.description="Installs the iptables redirect of a sidecar config (sidecar init-net apply)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN apt-get update \
 && apt-get install -y --no-install-recommends iptables \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/sidecar /sidecar
ENTRYPOINT ["/sidecar", "init-net", "apply", "-c", "/etc/sidecar/sidecar.yaml"]

# The proxy: nothing but the binary and the CA bundle it uses for TLS origination
# (upstream.tls without a ca reads /etc/ssl/certs/ca-certificates.crt).
FROM scratch AS proxy
ARG VERSION
LABEL org.opencontainers.image.title="sidecar" \
      org.opencontainers.image.description="TLS and mTLS sidecar proxy: one static binary, configured by one YAML file" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /out/sidecar /sidecar
USER 65532:65532
EXPOSE 8443 9901
ENTRYPOINT ["/sidecar"]
CMD ["run", "-c", "/etc/sidecar/sidecar.yaml"]
