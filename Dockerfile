# syntax=docker/dockerfile:1
# Hearth container image: build with the pinned Rust toolchain, run on distroless as a
# non-root user. Everything the binary reads at run time (profiles/*.json, migrations/)
# is embedded at compile time (include_str!, sqlx::migrate!), so only the binary ships.
#
#   docker build -t hearth:$(git rev-parse --short HEAD) .
#
# Health: the runtime image has no shell and no HTTP client, so there is no HEALTHCHECK;
# the load balancer checks GET /readyz (database reachable, migrations current) and
# GET /healthz answers while the process is up (docs/deploy.md).
#checkov:skip=CKV_DOCKER_2:No shell or HTTP client in the distroless image to run a probe; ECS relies on the ALB target-group check of /readyz.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS builder

# cmake: aws-lc-sys (rustls' crypto provider of the AWS SDK) may build with it.
RUN apt-get update \
    && apt-get install -y --no-install-recommends cmake \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /src

# Manifests first, then sources; the cache mounts keep the registry and target directory
# between builds without putting them in a layer.
COPY Cargo.toml Cargo.lock ./
COPY model ./model
COPY mllp ./mllp
COPY profiles ./profiles
COPY migrations ./migrations
COPY src ./src

RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin hearth \
    && install -D -m 0555 target/release/hearth /out/usr/local/bin/hearth

# Amazon RDS certificate authorities, so DATABASE_URL can use
# sslmode=verify-full&sslrootcert=/etc/hearth/rds-global-bundle.pem (the cluster forces TLS).
RUN curl -fsSL --proto '=https' --tlsv1.2 \
        -o /out/etc/hearth/rds-global-bundle.pem --create-dirs \
        https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem \
    && grep -q "BEGIN CERTIFICATE" /out/etc/hearth/rds-global-bundle.pem \
    && chmod 0444 /out/etc/hearth/rds-global-bundle.pem \
    && mkdir -p /out/var/lib/hearth/bulk

# ---------------------------------------------------------------------------------------------

FROM gcr.io/distroless/cc-debian12:nonroot

LABEL org.opencontainers.image.title="hearth" \
      org.opencontainers.image.description="FHIR R4 integration server: REST API, HL7 v2 over MLLP, SMART app" \
      org.opencontainers.image.licenses="Apache-2.0"

COPY --from=builder /out/usr/local/bin/hearth /usr/local/bin/hearth
COPY --from=builder /out/etc/hearth /etc/hearth
# The only writable place besides /tmp (bulk export files). With a read-only root
# filesystem the task mounts a volume here; the volume starts with this owner.
COPY --from=builder --chown=65532:65532 /out/var/lib/hearth /var/lib/hearth

# distroless "nonroot": uid/gid 65532, no shell, no package manager.
USER 65532:65532
WORKDIR /var/lib/hearth
VOLUME ["/var/lib/hearth"]

ENV HEARTH_LISTEN=0.0.0.0:8080 \
    HEARTH_MODE=production

# 8080: FHIR API, SMART app, /healthz, /readyz, /metrics. 2575: MLLP (a [[mllp.listeners]]
# entry in the config file; one port per listener).
EXPOSE 8080 2575

ENTRYPOINT ["/usr/local/bin/hearth"]
CMD ["serve"]
