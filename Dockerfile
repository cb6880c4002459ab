# licensor and the bundled directory emulator, built from this workspace.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin licensor --bin graph-emulator

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --home /var/lib/licensor --create-home licensor
COPY --from=build /src/target/release/licensor /src/target/release/graph-emulator /usr/local/bin/
USER licensor
WORKDIR /var/lib/licensor
ENV LICENSOR_LISTEN=0.0.0.0:8080
EXPOSE 8080
ENTRYPOINT ["licensor"]
CMD ["serve"]
