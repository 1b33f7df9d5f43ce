Write-Result ([ordered]@{ services = (Get-Services) })
