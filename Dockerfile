# syntax=docker/dockerfile:1
#
# keymint's container image: one static binary on a distroless base, running
# as a non-root user (65532). Build it with `make image` (needs a container
# engine: Docker with BuildKit, or Podman/Buildah).
#
# Stage 1 builds a static musl binary (rustls and ring: no OpenSSL, no libc
# at run time); stage 2 is distroless/static: no shell, no package manager,
# CA certificates and /etc/passwd only.

ARG RUST_VERSION=1.95
FROM docker.io/library/rust:${RUST_VERSION}-alpine AS build
# ring compiles a little C and assembly.
RUN apk add --no-cache musl-dev
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# The registry and target directories are BuildKit caches: a rebuild after a
# source change recompiles keymint only.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin keymint \
 && cp target/release/keymint /keymint \
 && /keymint --version

FROM gcr.io/distroless/static-debian12:nonroot
LABEL org.opencontainers.image.title="keymint" \
      org.opencontainers.image.description="Kubernetes operator that mints API keys declared as ApiKey resources into Secrets" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /keymint /usr/local/bin/keymint
# The distroless "nonroot" user; the chart sets runAsUser 65532 to match.
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/keymint"]
CMD ["run"]
