# syntax=docker/dockerfile:1
# One image with the four headroom exporters. The binary is the command:
#   docker run ghcr.io/headroom-exporters/headroom /usr/local/bin/ssm_quota_exporter
#   docker run ghcr.io/headroom-exporters/headroom /usr/local/bin/ecr_quota_exporter
#   docker run ghcr.io/headroom-exporters/headroom /usr/local/bin/s3_quota_exporter
#   docker run ghcr.io/headroom-exporters/headroom /usr/local/bin/servicequotas_exporter
# (the Helm chart sets `command` the same way). Single-exporter images, with their
# binary as entrypoint, one stage each named after the binary with dashes:
# `docker build --target ecr-quota-exporter .` and likewise for ssm-quota-exporter,
# s3-quota-exporter and servicequotas-exporter. `make image` builds them all.
# The image runs as a non-root user and writes nothing: run it with a read-only root
# filesystem. Configuration comes from --config.file and the standard AWS environment.

# The toolchain CI tests with (tests/test_docker.py checks they agree).
ARG RUST_VERSION=1.95

# The base images. A release uses these defaults; they are arguments so that the same
# file builds from other copies: the tests (tests/test_image.py) build the runtime
# stages on a local Debian 12 image standing in for distroless, with the same glibc,
# CA certificates and nonroot user 65532.
ARG BUILD_IMAGE=docker.io/library/rust:${RUST_VERSION}-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

# Where the binaries come from: `build` compiles them from source (releases), `prebuilt`
# takes them from the build context (the tests).
ARG BINARIES=build

# The git revision for aws_quota_exporter_build_info (.git is not in the context):
#   docker build --build-arg REVISION="$(git rev-parse --short=12 HEAD)" .
ARG REVISION=unknown

FROM ${BUILD_IMAGE} AS build
ARG REVISION
WORKDIR /src
COPY . .
# The same cargo build as CI (scripts/test.sh), in release mode and binaries only.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    HEADROOM_REVISION="${REVISION}" cargo build --locked --workspace --release --bins \
    && mkdir -p /out \
    && cp target/release/ssm_quota_exporter target/release/ecr_quota_exporter target/release/s3_quota_exporter \
          target/release/servicequotas_exporter /out/

# Binaries built elsewhere, for the tests only: tests/test_image.py builds the stages
# below around the binaries the test suite has just built and tested, from a build
# context that holds only them (BINARIES=prebuilt), instead of compiling the workspace
# a second time in release mode. Releases never use it.
FROM scratch AS prebuilt
COPY . /out/

# The binaries every image copies from: the build stage's, or the prebuilt ones.
# BuildKit and buildah build only the stages a target needs, so with BINARIES=prebuilt
# the build stage (and its base image) is not needed at all.
FROM ${BINARIES} AS binaries

# glibc, libgcc and CA certificates, no shell; user 65532 (nonroot).
FROM ${RUNTIME_IMAGE} AS runtime
ARG VERSION=0.1.0
ARG REVISION
LABEL org.opencontainers.image.title="headroom" \
      org.opencontainers.image.description="Prometheus exporters for AWS resource quotas: SSM Parameter Store, ECR, S3, and every quota Service Quotas meters" \
      org.opencontainers.image.source="https://github.com/headroom-exporters/headroom" \
      org.opencontainers.image.url="https://github.com/headroom-exporters/headroom" \
      org.opencontainers.image.documentation="https://github.com/headroom-exporters/headroom#readme" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
USER 65532:65532

FROM runtime AS ssm-quota-exporter
COPY --from=binaries /out/ssm_quota_exporter /usr/local/bin/
EXPOSE 9810
ENTRYPOINT ["/usr/local/bin/ssm_quota_exporter"]

FROM runtime AS ecr-quota-exporter
COPY --from=binaries /out/ecr_quota_exporter /usr/local/bin/
EXPOSE 9811
ENTRYPOINT ["/usr/local/bin/ecr_quota_exporter"]

FROM runtime AS s3-quota-exporter
COPY --from=binaries /out/s3_quota_exporter /usr/local/bin/
EXPOSE 9812
ENTRYPOINT ["/usr/local/bin/s3_quota_exporter"]

FROM runtime AS servicequotas-exporter
COPY --from=binaries /out/servicequotas_exporter /usr/local/bin/
EXPOSE 9813
ENTRYPOINT ["/usr/local/bin/servicequotas_exporter"]

# The default target: every exporter; the command picks the exporter.
FROM runtime AS headroom
COPY --from=binaries /out/ssm_quota_exporter /out/ecr_quota_exporter /out/s3_quota_exporter \
     /out/servicequotas_exporter /usr/local/bin/
EXPOSE 9810 9811 9812 9813
CMD ["/usr/local/bin/ssm_quota_exporter"]
