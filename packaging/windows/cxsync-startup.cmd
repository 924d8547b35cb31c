@echo off
rem cxsync: start the tray agent at login. Installed by `cxsync autostart enable`.
start "cxsync" /min "@CXSYNC@" tray
