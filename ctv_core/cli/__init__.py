"""cli"""
from .main import main
