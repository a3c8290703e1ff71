"""What the serving process and its workers say to each other: the framed protocol on the control
socket and the response pipes (``protocol``), and the JSON of bodies, chunks and errors
(``encoding``). Stdlib only: both processes import this folder. Also what a server tells the
Jupyter server it runs under, for litkit's Jupyter route (``registration``; never a worker's).
"""
