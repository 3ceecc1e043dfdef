# One image for every CloudShelf service; the Helm chart picks the command per service
# (`python -m services.<name>`, or `python -m cloudshelf.cli provision` in the hook Job).
# Build: docker build -t cloudshelf:0.1.0 .

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Only what the package is built from (pyproject.toml names README.md as its readme).
COPY pyproject.toml README.md ./
COPY cloudshelf ./cloudshelf
COPY services ./services
# The runtime dependencies only: no dev extras.
RUN pip install .

FROM python:3.11-slim
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# A numeric, non-root user, so Kubernetes can verify runAsNonRoot.
RUN groupadd --system --gid 10001 cloudshelf \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
      --home-dir /nonexistent --shell /usr/sbin/nologin cloudshelf
COPY --from=build /opt/venv /opt/venv
# An empty working directory: the installed packages are imported, not a source tree.
WORKDIR /app
USER 10001:10001
EXPOSE 50051 50052 50053 50054 50055
CMD ["python", "-m", "cloudshelf.cli", "--help"]
