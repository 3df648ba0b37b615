# The kubescrape node agent. Build: podman build -t kubescrape:0.1.0 .   (or docker build …)
# Deploy: kubescrape manifests --image kubescrape:0.1.0 | kubectl apply -f -
#
# Any Debian-based image with python3 (3.11+) and its venv module works as the base: scripts/image-test
# builds over a bookworm made with debootstrap (`podman build --from …`) when no registry can be reached.
# With a wheelhouse/ directory in the build context (pip wheel -w wheelhouse .), the build installs from it
# alone and needs no network; without it, pip fetches from PyPI.
FROM python:3.11-slim

# No .pyc writes (the DaemonSet runs with a read-only root filesystem) and unbuffered logs.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/kubescrape/bin:$PATH

WORKDIR /src
# .dockerignore keeps the context to pyproject.toml, README.md, kubescrape/ and wheelhouse/
COPY . ./
# A virtual environment: Debian's own python3 refuses system-wide pip installs (PEP 668).
# Bytecode is compiled at build time: with PYTHONDONTWRITEBYTECODE (and a read-only root) a module without
# its .pyc is recompiled on every start (0.18 s CPU for kubescrape's own 44 run-path modules alone). pip
# compiles what it installs (compileall ignores PYTHONDONTWRITEBYTECODE), but the python:3.11-slim image
# deletes the standard library's .pyc files (asyncio, ssl, email, … are on the run path too): compile both;
# compileall skips what is already compiled (a Debian base's own python3 ships its .pyc).
RUN python3 -m venv /opt/kubescrape \
    && if [ -d wheelhouse ]; then \
           pip install --no-index --find-links wheelhouse kubescrape; \
       else \
           pip install .; \
       fi \
    && python3 -m compileall -q -x '/(test|tests|idle_test|idlelib|tkinter|turtledemo|lib2to3)/' \
           "$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])')" /opt/kubescrape/lib \
    && kubescrape --help >/dev/null \
    && cd / && rm -rf /src

# Same uid/gid as runAsUser in the generated DaemonSet.
RUN groupadd --system --gid 10001 kubescrape \
    && useradd --system --uid 10001 --gid kubescrape --no-create-home --shell /usr/sbin/nologin kubescrape \
    && mkdir -p /var/lib/kubescrape/spool /etc/categraf/conf/input.prometheus \
    && chown -R kubescrape:kubescrape /var/lib/kubescrape
USER 10001:10001
WORKDIR /var/lib/kubescrape

EXPOSE 9101
ENTRYPOINT ["kubescrape", "run", "--config-dir", "/etc/categraf/conf"]
CMD ["--listen", "0.0.0.0:9101", "--spool-dir", "/var/lib/kubescrape/spool"]
