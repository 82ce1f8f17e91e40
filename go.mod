module github.com/evlistener/evlistener

go 1.24
