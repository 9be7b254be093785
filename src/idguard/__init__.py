"""idguard — the invalid resident ID card information system (失效居民身份证信息系统)."""

__version__ = "0.1.0"
