# The wheelhouse as an image, for the service images to mount at build time (no network, no CA
# inside a build). Made by `make images` (scripts/images.sh) from build/wheelhouse, which
# scripts/wheelhouse.sh fills on the host with the host's own pip configuration:
#   docker build -f deploy/wheelhouse.Dockerfile -t voxline-wheelhouse:latest build/wheelhouse
# The service Dockerfiles read it with `RUN --mount=type=bind,from=wheelhouse,...`: the wheels are
# never copied into a layer of a service image.
FROM scratch
COPY . /wheels/
