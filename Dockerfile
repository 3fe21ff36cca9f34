# recap for Docker Spaces and self-hosting: the README's set-up (`bash setup.sh`), then `python app.py`.
#   docker build -t recap . && docker run -p 7860:7860 -e HF_TOKEN=hf_... recap
# Results go to /data/recap when a writable /data is mounted (persistent storage), else ./recap_data.
FROM python:3.11-slim-bookworm

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    GRADIO_SERVER_NAME=0.0.0.0 \
    GRADIO_SERVER_PORT=7860

# The app runs as an unprivileged user (uid 1000, as Hugging Face Spaces expect).
RUN useradd --create-home --uid 1000 user
WORKDIR /home/user/app
COPY --chown=user:user . .

# As root, so that setup.sh can apt-get the Debian packages of packages.txt; then the pinned
# Python packages into .venv (requirements.txt). .venv stays root's (read-only for the app);
# the folder itself is the user's, for ./recap_data when no /data volume is mounted.
RUN bash setup.sh && chown user:user /home/user/app

USER user
ENV HOME=/home/user
EXPOSE 7860
CMD [".venv/bin/python", "app.py"]
