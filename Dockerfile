# syntax=docker/dockerfile:1
#
# keymint's image built from source inside a container engine, for a build
# service that has only the repository: `make image-dockerfile` (Docker with
# BuildKit, or Podman/Buildah). It pulls rust:slim-bookworm to build with.
# The result is the image `make image` builds from a binary built on the host
# (Dockerfile.host), the one the tests build and run: the same script builds
# keymint as one static-pie binary (glibc linked in, rustls and ring, no
# OpenSSL), and the image holds that file alone, run as user 65532.

ARG RUST_VERSION=1.95
FROM docker.io/library/rust:${RUST_VERSION}-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY tests/image/build-static.sh ./tests/image/
# The registry and target directories are BuildKit caches: a rebuild after a
# source change recompiles keymint only.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cp "$(tests/image/build-static.sh)" /keymint \
 && /keymint --version

FROM scratch
LABEL org.opencontainers.image.title="keymint" \
      org.opencontainers.image.description="Kubernetes operator that mints API keys declared as ApiKey resources into Secrets" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /keymint /usr/local/bin/keymint
# The chart runs it as 65532:65532 with a read-only root filesystem and no
# capabilities; nothing here needs more.
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/keymint"]
CMD ["run"]
