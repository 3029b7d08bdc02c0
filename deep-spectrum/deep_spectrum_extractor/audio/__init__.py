"""Audio -> chunks: finding, reading and cutting recordings."""
from .chunking import Chunk, chunk_signal, default_nfft
from .reading import InMemoryAudio, find_audio_files, read_audio

__all__ = ["Chunk", "InMemoryAudio", "chunk_signal", "default_nfft", "find_audio_files", "read_audio"]
